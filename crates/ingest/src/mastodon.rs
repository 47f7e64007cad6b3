//! Mastodon: an instance's streaming API (server-sent events) for hashtag timelines and,
//! where allowed, the public timeline.
//!
//! [`MastodonStream`] opens one SSE connection per (instance, timeline) —
//! `GET /api/v1/streaming/hashtag?tag=T` or `/api/v1/streaming/public` — each in its own
//! task, and yields their events as [`SourceLine`]s in one order of arrival:
//! `{"event": "update" | "status.update" | "delete", "instance": host, "payload": …}` (the
//! status object, or the deleted id), which the run loop classifies. Heartbeats (`:thump`)
//! keep a connection alive; other events (notifications, filter changes) are passed on and
//! counted as other events.
//!
//! **No gap on reconnect.** The streaming API cannot resume, so after every reconnect the
//! task first reconnects the stream, then pages the timeline's REST endpoint forward from the
//! newest status it had (`min_id`), so what was posted while it was away comes too; what it
//! already had is dropped by id downstream. REST calls respect `X-RateLimit-Remaining` /
//! `X-RateLimit-Reset` (and wait on 429). It never filters by keyword: hashtag timelines
//! are the server's filter, and public-timeline lines are marked for the track terms.
//!
//! **Tokens.** An access token belongs to one instance: each [`Instance`] carries its own
//! (the config's `sources.mastodon.token_envs`), sent as `Authorization: Bearer` to that
//! instance's timelines only and never logged. A redirect is followed only to `https://` (or
//! to loopback), and reqwest drops the token on one that leaves the host or port. An
//! instance is reached over `https://`; plain `http://` is refused except to a loopback
//! address (a local server, the tests), where the traffic never leaves the machine.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::IngestError;
use crate::source::{PostSource, SourceLine, SourceStats};
use flagship_core::Platform;

/// An access token: shown as `Token(…)` in debug output, never its value.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(value: String) -> Token {
        Token(value)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// One instance, with its own access token (if any): the token goes to this instance only.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// `https://host` (or `http://127.0.0.1:PORT` in tests).
    pub base: String,
    pub token: Option<Token>,
}

impl Instance {
    /// `instance` as the config writes it (`mastodon.social`, `https://…`); a blank token is
    /// no token.
    pub fn new(instance: &str, token: Option<String>) -> Instance {
        Instance {
            base: Timeline::base_of(instance),
            token: token.filter(|t| !t.trim().is_empty()).map(Token),
        }
    }
}

/// One timeline of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// `https://host` (or `http://127.0.0.1:PORT` in tests).
    pub base: String,
    /// `None`: the public timeline.
    pub hashtag: Option<String>,
    /// This instance's token, sent to it alone.
    pub token: Option<Token>,
}

impl Timeline {
    /// `mastodon.social` or `https://mastodon.social/` → `https://mastodon.social`.
    pub fn base_of(instance: &str) -> String {
        let i = instance.trim().trim_end_matches('/');
        if i.starts_with("http://") || i.starts_with("https://") {
            i.to_owned()
        } else {
            format!("https://{i}")
        }
    }

    fn host(&self) -> &str {
        self.base
            .split("://")
            .nth(1)
            .unwrap_or(&self.base)
            .trim_end_matches('/')
    }

    fn stream_url(&self) -> String {
        match &self.hashtag {
            Some(t) => format!("{}/api/v1/streaming/hashtag?tag={t}", self.base),
            None => format!("{}/api/v1/streaming/public", self.base),
        }
    }

    fn rest_url(&self, min_id: &str) -> String {
        match &self.hashtag {
            Some(t) => format!(
                "{}/api/v1/timelines/tag/{t}?limit=40&min_id={min_id}",
                self.base
            ),
            None => format!(
                "{}/api/v1/timelines/public?limit=40&min_id={min_id}",
                self.base
            ),
        }
    }

    fn name(&self) -> String {
        match &self.hashtag {
            Some(t) => format!("{}#{t}", self.host()),
            None => format!("{}/public", self.host()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MastodonConfig {
    pub timelines: Vec<Timeline>,
    /// No byte (not even a heartbeat) for this long: reconnect. Mastodon beats every ~10 s.
    pub stall: Duration,
}

impl MastodonConfig {
    /// Every hashtag on every instance, plus each public timeline when asked; each timeline
    /// carries its own instance's token.
    pub fn new(instances: &[Instance], hashtags: &[String], public: bool) -> MastodonConfig {
        let mut timelines = Vec::new();
        for i in instances {
            let timeline = |hashtag: Option<String>| Timeline {
                base: i.base.clone(),
                hashtag,
                token: i.token.clone(),
            };
            timelines.extend(hashtags.iter().map(|h| timeline(Some(h.clone()))));
            if public {
                timelines.push(timeline(None));
            }
        }
        MastodonConfig {
            timelines,
            stall: Duration::from_secs(60),
        }
    }
}

/// `https://…`, or `http://` to a loopback host (`localhost`, `127.0.0.0/8`, `[::1]`).
pub fn transport_ok(base: &str) -> bool {
    if base.starts_with("https://") {
        return true;
    }
    let Some(rest) = base.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Server-sent events, parsed incrementally: `event:` / `data:` fields, a blank line ends an
/// event, `:` lines are comments (heartbeats).
#[derive(Debug, Default)]
pub struct Sse {
    buf: Vec<u8>,
    event: String,
    data: Vec<String>,
    pub heartbeats: u64,
}

impl Sse {
    /// Feeds bytes; returns the complete events `(name, data)` (name `message` when unnamed).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=i).collect();
            line.pop();
            if line.ends_with(b"\r") {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if !self.data.is_empty() {
                    let name = std::mem::take(&mut self.event);
                    out.push((
                        if name.is_empty() {
                            "message".into()
                        } else {
                            name
                        },
                        std::mem::take(&mut self.data).join("\n"),
                    ));
                }
                self.event.clear();
            } else if line.starts_with(':') {
                self.heartbeats += 1;
            } else {
                let (field, value) = line.split_once(':').unwrap_or((&line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => self.event = value.to_owned(),
                    "data" => self.data.push(value.to_owned()),
                    _ => {}
                }
            }
        }
        out
    }
}

/// Mastodon ids are decimal strings that grow with time (snowflake-like): longer is newer.
fn newer(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

/// One line in the shape [`flagship_platforms::mastodon::parse_line`] reads.
fn line_of(event: &str, host: &str, payload: &str) -> Option<Bytes> {
    // One line per record: SSE joins multi-line data with line breaks, which in valid JSON
    // are whitespace between tokens (strings hold none raw).
    let payload = payload.trim().replace(['\n', '\r'], " ");
    let payload = payload.as_str();
    let payload = if event == "delete" {
        serde_json::to_string(payload).ok()?
    } else if payload.starts_with('{') {
        payload.to_owned()
    } else {
        serde_json::to_string(payload).ok()?
    };
    Some(Bytes::from(format!(
        "{{\"event\":{},\"instance\":{},\"payload\":{payload}}}",
        serde_json::to_string(event).ok()?,
        serde_json::to_string(host).ok()?
    )))
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

type Item = Result<(SourceLine, usize, SourceStats), IngestError>;

/// The merged source: a task per timeline, lines in order of arrival.
pub struct MastodonStream {
    rx: mpsc::Receiver<Item>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Each timeline's counts, as of its latest line.
    per_timeline: Vec<SourceStats>,
}

impl MastodonStream {
    pub fn start(cfg: MastodonConfig) -> Result<MastodonStream, IngestError> {
        if cfg.timelines.is_empty() {
            return Err(IngestError::Fatal(
                "Mastodon: no timeline to stream (sources.mastodon: instances and hashtags)".into(),
            ));
        }
        if let Some(t) = cfg.timelines.iter().find(|t| !transport_ok(&t.base)) {
            return Err(IngestError::Fatal(format!(
                "Mastodon: {}: use https:// (plain http:// only to a loopback address)",
                t.base
            )));
        }
        let http = reqwest::Client::builder()
            // A redirect may not downgrade to plain HTTP off the machine; one that leaves
            // the host or port loses the token (reqwest drops `Authorization` then).
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= 5 {
                    attempt.error("too many redirects")
                } else if transport_ok(attempt.url().as_str()) {
                    attempt.follow()
                } else {
                    attempt.error("a redirect to plain http:// off this machine")
                }
            }))
            .connect_timeout(Duration::from_secs(10))
            // No byte for this long on an open response (a stream's heartbeats stop, a REST
            // answer stalls): the read fails and the task reconnects.
            .read_timeout(cfg.stall)
            .user_agent(concat!("flagship/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| IngestError::Fatal(format!("HTTP client: {e}")))?;
        let (tx, rx) = mpsc::channel(1024);
        let tasks: Vec<tokio::task::JoinHandle<()>> = cfg
            .timelines
            .iter()
            .enumerate()
            .map(|(index, t)| {
                let task = Task {
                    index,
                    timeline: t.clone(),
                    stall: cfg.stall,
                    http: http.clone(),
                    tx: tx.clone(),
                    newest: None,
                    stats: SourceStats::default(),
                    line: 0,
                    offset: 0,
                };
                tokio::spawn(task.run())
            })
            .collect();
        Ok(MastodonStream {
            rx,
            per_timeline: vec![SourceStats::default(); tasks.len()],
            tasks,
        })
    }
}

impl Drop for MastodonStream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[async_trait::async_trait]
impl PostSource for MastodonStream {
    async fn next_line(&mut self) -> Result<Option<SourceLine>, IngestError> {
        match self.rx.recv().await {
            None => Ok(None),
            Some(Err(e)) => Err(e),
            Some(Ok((line, index, stats))) => {
                self.per_timeline[index] = stats;
                Ok(Some(line))
            }
        }
    }

    fn stats(&self) -> SourceStats {
        SourceStats::sum(&self.per_timeline)
    }
}

struct Task {
    index: usize,
    timeline: Timeline,
    stall: Duration,
    http: reqwest::Client,
    tx: mpsc::Sender<Item>,
    /// The newest status id had from this timeline (the backfill's `min_id`).
    newest: Option<String>,
    stats: SourceStats,
    line: u64,
    /// Bytes of the current connection's body before the event being sent (its offset).
    offset: u64,
}

enum Ended {
    /// Retry after this wait.
    Retry(Duration),
    /// The consumer is gone, or a fatal error was sent.
    Stop,
}

impl Task {
    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.get(url);
        match &self.timeline.token {
            Some(Token(t)) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&mut self, event: &str, payload: &str, origin: &str) -> bool {
        let Some(bytes) = line_of(event, self.timeline.host(), payload) else {
            return true;
        };
        if matches!(event, "update" | "status.update")
            && let Ok(s) = serde_json::from_str::<IdOnly>(payload)
            && self.newest.as_deref().is_none_or(|n| newer(&s.id, n))
        {
            self.newest = Some(s.id);
        }
        self.line += 1;
        let line = SourceLine {
            platform: Platform::Mastodon,
            unfiltered: self.timeline.hashtag.is_none(),
            bytes,
            origin: origin.to_owned(),
            line: self.line,
            offset: self.offset,
        };
        self.tx
            .send(Ok((line, self.index, self.stats.clone())))
            .await
            .is_ok()
    }

    async fn run(mut self) {
        let mut wait = Duration::from_secs(1);
        loop {
            let connections = self.stats.connections;
            let ended = self.connect_and_stream().await;
            if self.stats.connections > connections {
                // It connected: the next failure starts the schedule again.
                wait = Duration::from_secs(1);
            }
            match ended {
                Ended::Stop => return,
                Ended::Retry(w) => {
                    let w = w.max(wait);
                    self.stats.waits.push(w);
                    tracing::info!(timeline = %self.timeline.name(), "Mastodon: reconnecting in {w:?}");
                    tokio::time::sleep(w).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    async fn fatal(&self, message: String) -> Ended {
        self.tx.send(Err(IngestError::Fatal(message))).await.ok();
        Ended::Stop
    }

    async fn connect_and_stream(&mut self) -> Ended {
        let url = self.timeline.stream_url();
        let name = self.timeline.name();
        let request = self.get(&url).header("Accept", "text/event-stream").send();
        let resp = match tokio::time::timeout(self.stall, request).await {
            Err(_) => {
                self.stats.stalls += 1;
                tracing::warn!(timeline = %name, "Mastodon: no answer within {:?}", self.stall);
                return Ended::Retry(Duration::from_secs(1));
            }
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.stats.network_errors += 1;
                tracing::warn!(timeline = %name, "Mastodon: {}", e.without_url());
                return Ended::Retry(Duration::from_secs(1));
            }
        };
        let status = resp.status();
        if status == 401 || status == 403 {
            return self
                .fatal(format!(
                    "Mastodon {name}: HTTP {status}: this instance needs an access token for streaming (name its variable in `sources.mastodon.token_envs`)"
                ))
                .await;
        }
        if status == 429 {
            self.stats.rate_limited += 1;
            return Ended::Retry(reset_wait(resp.headers()));
        }
        if !status.is_success() {
            self.stats.http_errors += 1;
            tracing::warn!(timeline = %name, "Mastodon: HTTP {status}");
            return Ended::Retry(Duration::from_secs(5));
        }
        self.stats.connections += 1;
        if self.stats.connections > 1 {
            self.stats.reconnects += 1;
        }
        let origin = format!("{name}#{}", self.stats.connections);
        tracing::info!(timeline = %name, "Mastodon: connected");
        // The stream is open: what was posted since the newest status had comes by REST.
        if self.newest.is_some()
            && let Some(end) = self.backfill(&origin).await
        {
            return end;
        }
        let mut body = resp.bytes_stream();
        let mut sse = Sse::default();
        self.offset = 0;
        loop {
            let chunk = match tokio::time::timeout(self.stall, body.next()).await {
                Err(_) => {
                    self.stats.stalls += 1;
                    tracing::warn!(timeline = %name, "Mastodon: no heartbeat within {:?}", self.stall);
                    return Ended::Retry(Duration::from_secs(1));
                }
                Ok(None) => return Ended::Retry(Duration::from_secs(1)),
                Ok(Some(Err(e))) => {
                    self.stats.network_errors += 1;
                    tracing::warn!(timeline = %name, "Mastodon: {}", e.without_url());
                    return Ended::Retry(Duration::from_secs(1));
                }
                Ok(Some(Ok(c))) => c,
            };
            for (event, data) in sse.feed(&chunk) {
                if !self.send(&event, &data, &origin).await {
                    return Ended::Stop;
                }
            }
            // Events are offset by the chunk they completed in (SSE frames have no ids).
            self.offset += chunk.len() as u64;
        }
    }

    /// Pages the REST timeline forward from the newest status had; `Some` to end this
    /// connection: the consumer is gone or the answer was fatal (stop), or the backfill could
    /// not finish (retry: the stream must not run past a gap it could not fill).
    async fn backfill(&mut self, origin: &str) -> Option<Ended> {
        let mut pages = 0;
        while let Some(min_id) = self.newest.clone() {
            let url = self.timeline.rest_url(&min_id);
            let resp = match self.get(&url).timeout(Duration::from_secs(30)).send().await {
                Ok(r) => r,
                Err(e) => {
                    self.stats.network_errors += 1;
                    tracing::warn!("Mastodon backfill: {}", e.without_url());
                    return Some(Ended::Retry(Duration::from_secs(5)));
                }
            };
            let status = resp.status();
            if status == 429 {
                self.stats.rate_limited += 1;
                tokio::time::sleep(reset_wait(resp.headers())).await;
                continue;
            }
            if status == 401 || status == 403 {
                return Some(
                    self.fatal(format!(
                        "Mastodon {}: HTTP {status} on the timeline (a token is needed)",
                        self.timeline.name()
                    ))
                    .await,
                );
            }
            if !status.is_success() {
                self.stats.http_errors += 1;
                tracing::warn!("Mastodon backfill: HTTP {status}");
                return Some(Ended::Retry(Duration::from_secs(5)));
            }
            let remaining = header_u64(resp.headers(), "x-ratelimit-remaining");
            let wait = reset_wait(resp.headers());
            let Ok(body) = resp.bytes().await else {
                self.stats.network_errors += 1;
                return Some(Ended::Retry(Duration::from_secs(5)));
            };
            let Ok(items) = serde_json::from_slice::<Vec<Box<serde_json::value::RawValue>>>(&body)
            else {
                self.stats.http_errors += 1;
                tracing::warn!("Mastodon backfill: not a list of statuses");
                return Some(Ended::Retry(Duration::from_secs(5)));
            };
            if items.is_empty() {
                break;
            }
            pages += 1;
            // A page is newest first: send oldest first.
            for item in items.iter().rev() {
                if !self.send("update", item.get(), origin).await {
                    return Some(Ended::Stop);
                }
            }
            if self.newest.as_deref() == Some(min_id.as_str()) {
                // A server that ignores `min_id` answers the same page again: stop paging.
                tracing::warn!("Mastodon backfill: the page did not move past {min_id}; stopping");
                break;
            }
            if remaining.is_some_and(|r| r <= 1) {
                tokio::time::sleep(wait).await;
            }
        }
        tracing::info!(timeline = %self.timeline.name(), pages, "Mastodon: backfilled the gap");
        None
    }
}

fn header_u64(h: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

/// How long until `X-RateLimit-Reset` (an RFC 3339 time), within 1 s … 5 min.
fn reset_wait(h: &reqwest::header::HeaderMap) -> Duration {
    h.get("x-ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
        .and_then(|t| {
            (t.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .ok()
        })
        .unwrap_or(Duration::from_secs(60))
        .clamp(Duration::from_secs(1), Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_frames_heartbeats_and_split_chunks() {
        let mut s = Sse::default();
        let mut got = s.feed(b":thump\n\nevent: upd");
        got.extend(s.feed(b"ate\ndata: {\"id\":\"1\"}\n\nevent: delete\r\ndata: 7\r\n\r\n"));
        got.extend(s.feed(b"data: a\ndata: b\n\n"));
        assert_eq!(
            got,
            [
                ("update".to_owned(), "{\"id\":\"1\"}".to_owned()),
                ("delete".into(), "7".into()),
                ("message".into(), "a\nb".into()),
            ]
        );
        assert_eq!(s.heartbeats, 1);
    }

    #[test]
    fn ids_compare_as_numbers_and_lines_parse() {
        assert!(newer("110000000000000001", "99999999999999999"));
        assert!(!newer("1", "2"));
        let l = line_of("delete", "mastodon.social", "109").unwrap();
        let (e, host) = flagship_platforms::mastodon::parse_line(&l).unwrap();
        assert!(matches!(e, flagship_platforms::mastodon::Event::Delete(id) if id == "109"));
        assert_eq!(host.as_deref(), Some("mastodon.social"));
        assert_eq!(Timeline::base_of("fosstodon.org/"), "https://fosstodon.org");
    }

    #[test]
    fn plain_http_only_to_loopback_and_tokens_never_printed() {
        for ok in [
            "https://mastodon.social",
            "http://127.0.0.1:8080",
            "http://localhost:3000/",
            "http://[::1]:4000",
        ] {
            assert!(transport_ok(ok), "{ok}");
        }
        for bad in [
            "http://mastodon.social",
            "http://127.0.0.1.example.org",
            "http://127.0.0.1@example.org",
            "http://[::2]:80",
            "ftp://x",
        ] {
            assert!(!transport_ok(bad), "{bad}");
        }
        let i = Instance::new("fosstodon.org", Some("s3cret".into()));
        assert!(!format!("{i:?}").contains("s3cret"));
        assert_eq!(Instance::new("a.b", Some(" ".into())).token, None);
        let e = MastodonStream::start(MastodonConfig::new(
            &[Instance::new("http://mastodon.social", None)],
            &["jwst".into()],
            false,
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("http://mastodon.social") && e.contains("https://"),
            "{e}"
        );
    }
}
