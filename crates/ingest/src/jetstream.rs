//! Bluesky's Jetstream: every public post, as JSON over a WebSocket, with no account.
//!
//! [`Jetstream`] connects to `<endpoint>?wantedCollections=app.bsky.feed.post[&cursor=T]` and
//! yields each event as one [`SourceLine`] (Bluesky events; the run loop classifies them).
//! It never filters by keyword (Jetstream cannot; the run loop matches the track terms).
//!
//! **Resume.** Every event carries `time_us`, Jetstream's receive time, which is also the
//! cursor a client passes back. After a dropped connection the source reconnects at the last
//! handled `time_us` minus `rewind` and drops the posts of the overlap it already returned
//! (by `at://` id), so a reconnect loses and repeats nothing. The point is saved in the
//! cursor file (JSON, written atomically):
//! - at a clean stop ([`PostSource::commit`], after everything was delivered or spilled):
//!   the last handled point and the ids handled in the rewind window before it, `clean` —
//!   a restart resumes there and repeats nothing;
//! - every few seconds while running: a point `lag` behind, not `clean` — after a crash the
//!   restart resumes there and repeats what was delivered after that point; combine drops
//!   the repeats by id. `lag` is set from the sink's buffering (`ingest run` uses twice the
//!   buffer interval plus the drain deadline, at least two minutes), so a record a crash
//!   finds in the queue or a sink buffer is older than the point only if the sink was stuck
//!   longer than that — then, and only then, a crash can lose it (a clean stop never does).
//!
//! **Failover.** Endpoints are tried in order: a failed connection or a stall moves to the
//! next, with a doubling wait (1 s … 60 s) once every endpoint failed in a row. The cursor
//! is each instance's own receive time, so after a switch the rewind is 30 s, not 5 s (an
//! instance running behind another is covered; the repeats are dropped by id).

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::IngestError;
use crate::source::{PostSource, SourceLine, SourceStats};
use flagship_core::Platform;

/// What a Jetstream source needs.
#[derive(Debug, Clone)]
pub struct JetstreamConfig {
    /// `wss://…/subscribe` endpoints, tried in order.
    pub endpoints: Vec<String>,
    /// Where the resume point is kept; `None`: start at the live edge every time.
    pub cursor_file: Option<PathBuf>,
    /// How far before the resume point a reconnect starts.
    pub rewind: Duration,
    /// No message for this long: the connection is dead, reconnect.
    pub stall: Duration,
    /// How far behind the live point the periodic (crash) checkpoint stays.
    pub lag: Duration,
}

/// The rewind after switching to another Jetstream instance (their clocks differ).
pub const FAILOVER_REWIND: Duration = Duration::from_secs(30);

impl JetstreamConfig {
    pub fn new(endpoints: Vec<String>) -> JetstreamConfig {
        JetstreamConfig {
            endpoints,
            cursor_file: None,
            rewind: Duration::from_secs(5),
            stall: Duration::from_secs(30),
            lag: Duration::from_secs(120),
        }
    }
}

/// The saved resume point.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// `time_us` of the last event handled (clean) or of a point safely behind it.
    pub time_us: u64,
    /// Saved at a clean stop: everything up to `time_us` was delivered or spilled, and `ids`
    /// are the posts handled in the rewind window before it.
    pub clean: bool,
    #[serde(default)]
    pub ids: Vec<String>,
}

impl Cursor {
    pub fn load(path: &std::path::Path) -> Result<Option<Cursor>, IngestError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                IngestError::Fatal(format!(
                    "{}: not a Jetstream cursor ({e}); remove it to start at the live edge",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(IngestError::Io(format!("{}: {e}", path.display()))),
        }
    }

    fn save(&self, path: &std::path::Path) -> Result<(), IngestError> {
        let bytes = serde_json::to_vec(self).expect("cursor serializes");
        flagship_store::fs::write_atomic(path, &bytes)
            .map_err(|e| IngestError::Io(format!("cursor {}: {e}", path.display())))
    }
}

/// The fields of an event the source reads (the record is skipped, not parsed).
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    did: std::borrow::Cow<'a, str>,
    time_us: u64,
    #[serde(default, borrow)]
    commit: Option<PeekCommit<'a>>,
}

#[derive(Deserialize)]
struct PeekCommit<'a> {
    #[serde(borrow)]
    operation: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    collection: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    rkey: std::borrow::Cow<'a, str>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Socket = WebSocketStream<Box<dyn Io>>;

pub struct Jetstream {
    cfg: JetstreamConfig,
    endpoint: usize,
    failures_in_a_row: usize,
    /// The next connection goes to another instance than the last one that worked.
    switched: bool,
    socket: Option<Socket>,
    /// Last handled event's `time_us`.
    last: Option<u64>,
    /// Posts handled in the rewind window before `last`: (time_us, id).
    recent: VecDeque<(u64, String)>,
    recent_ids: HashSet<String>,
    /// Samples (when, time_us) for the lagged checkpoint.
    samples: VecDeque<(Instant, u64)>,
    last_save: Instant,
    messages: u64,
    /// Bytes of messages received on the current connection (a frame's offset).
    bytes_in: u64,
    stats: SourceStats,
    /// Posts of an overlap dropped (already handled before a reconnect or a clean restart).
    pub overlap_dropped: u64,
}

impl Jetstream {
    /// A source resuming from the cursor file when there is one.
    pub fn new(cfg: JetstreamConfig) -> Result<Jetstream, IngestError> {
        if cfg.endpoints.is_empty() {
            return Err(IngestError::Fatal("no Jetstream endpoint".into()));
        }
        let mut s = Jetstream {
            cfg,
            endpoint: 0,
            failures_in_a_row: 0,
            switched: false,
            socket: None,
            last: None,
            recent: VecDeque::new(),
            recent_ids: HashSet::new(),
            samples: VecDeque::new(),
            last_save: Instant::now(),
            messages: 0,
            bytes_in: 0,
            stats: SourceStats::default(),
            overlap_dropped: 0,
        };
        if let Some(path) = &s.cfg.cursor_file
            && let Some(c) = Cursor::load(path)?
        {
            tracing::info!(
                time_us = c.time_us,
                clean = c.clean,
                ids = c.ids.len(),
                "Jetstream: resuming from {}",
                path.display()
            );
            s.last = Some(c.time_us);
            for id in c.ids {
                s.recent_ids.insert(id.clone());
                s.recent.push_back((c.time_us, id));
            }
        }
        Ok(s)
    }

    /// The URL of the current endpoint, with the resume cursor.
    pub fn url(&self) -> String {
        let base = &self.cfg.endpoints[self.endpoint];
        let sep = if base.contains('?') { '&' } else { '?' };
        let mut url = format!(
            "{base}{sep}wantedCollections={}",
            flagship_platforms::bluesky::POST
        );
        if let Some(t) = self.last {
            let rewind = if self.switched {
                FAILOVER_REWIND.max(self.cfg.rewind)
            } else {
                self.cfg.rewind
            };
            let back = rewind.as_micros() as u64;
            url += &format!("&cursor={}", t.saturating_sub(back));
        }
        url
    }

    async fn connect(&mut self) -> Result<Socket, String> {
        let url = self.url();
        let parsed = url::Url::parse(&url).map_err(|e| format!("{url}: {e}"))?;
        let host = parsed.host_str().ok_or("no host")?.to_owned();
        let tls = parsed.scheme() == "wss";
        let port = parsed
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| format!("{host}:{port}: connect timed out"))?
        .map_err(|e| format!("{host}:{port}: {e}"))?;
        let io: Box<dyn Io> = if tls {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("{host}: {e}"))?;
            Box::new(
                tls_connector()?
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("{host}: TLS: {e}"))?,
            )
        } else {
            Box::new(tcp)
        };
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::client_async(url.as_str(), io),
        )
        .await
        .map_err(|_| format!("{url}: handshake timed out"))?
        .map_err(|e| format!("{url}: {e}"))?;
        tracing::info!(url = %url, "Jetstream: connected");
        Ok(ws)
    }

    /// After a failure: the next endpoint, and a doubling wait once all failed in a row.
    async fn fail_over(&mut self, why: &str) {
        self.stats.network_errors += 1;
        self.failures_in_a_row += 1;
        let n = self.cfg.endpoints.len();
        tracing::warn!(
            endpoint = %self.cfg.endpoints[self.endpoint],
            "Jetstream: {why}; trying the next endpoint"
        );
        self.endpoint = (self.endpoint + 1) % n;
        self.switched |= n > 1;
        let rounds = (self.failures_in_a_row / n) as u32;
        if rounds > 0 {
            let wait =
                Duration::from_secs(1u64 << (rounds - 1).min(6)).min(Duration::from_secs(60));
            self.stats.waits.push(wait);
            tokio::time::sleep(wait).await;
        }
    }

    /// Remembers a handled event; whether it is a post already handled (an overlap). An
    /// event it cannot read is no repeat: the run loop quarantines it.
    fn repeat(&mut self, bytes: &[u8]) -> bool {
        let Ok(peek) = serde_json::from_slice::<Peek>(bytes) else {
            return false;
        };
        let t = peek.time_us;
        self.last = Some(self.last.map_or(t, |l| l.max(t)));
        let now = Instant::now();
        if self
            .samples
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= Duration::from_secs(1))
        {
            self.samples.push_back((now, t));
        }
        let Some(post) = peek.commit.filter(|c| {
            c.collection == flagship_platforms::bluesky::POST && c.operation != "delete"
        }) else {
            return false;
        };
        let id = flagship_platforms::bluesky::post_uri(&peek.did, &post.rkey);
        if self.recent_ids.contains(&id) {
            return true;
        }
        self.recent_ids.insert(id.clone());
        self.recent.push_back((t, id));
        // Keep the ids of a window of twice the rewind (events arrive a little out of order).
        let keep_from = self
            .last
            .unwrap_or(t)
            .saturating_sub(2 * self.cfg.rewind.as_micros() as u64);
        while self.recent.front().is_some_and(|(rt, _)| *rt < keep_from) {
            let (_, old) = self.recent.pop_front().expect("front");
            self.recent_ids.remove(&old);
        }
        false
    }

    /// Saves the lagged (crash) checkpoint every few seconds.
    fn checkpoint(&mut self) {
        let Some(path) = self.cfg.cursor_file.clone() else {
            return;
        };
        if self.last_save.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.last_save = Instant::now();
        let lag = self.cfg.lag;
        while self.samples.len() > 1 && self.samples[1].0.elapsed() >= lag {
            self.samples.pop_front();
        }
        let Some(&(at, t)) = self.samples.front() else {
            return;
        };
        // Until a sample is `lag` old, the point to keep is where this run started.
        let time_us = if at.elapsed() >= lag {
            t
        } else {
            match Cursor::load(&path) {
                Ok(Some(c)) => c.time_us,
                _ => return,
            }
        };
        let c = Cursor {
            time_us,
            clean: false,
            ids: Vec::new(),
        };
        if let Err(e) = c.save(&path) {
            tracing::warn!("{e}");
        }
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        roots.add(cert).ok();
    }
    if roots.is_empty() {
        return Err("no CA certificates found on this system".into());
    }
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

#[async_trait::async_trait]
impl PostSource for Jetstream {
    async fn next_line(&mut self) -> Result<Option<SourceLine>, IngestError> {
        loop {
            if self.socket.is_none() {
                match self.connect().await {
                    Ok(ws) => {
                        self.stats.connections += 1;
                        if self.stats.connections > 1 {
                            self.stats.reconnects += 1;
                        }
                        self.socket = Some(ws);
                        self.bytes_in = 0;
                        self.switched = false;
                    }
                    Err(e) => {
                        self.fail_over(&e).await;
                        continue;
                    }
                }
            }
            let ws = self.socket.as_mut().expect("connected above");
            let msg = match tokio::time::timeout(self.cfg.stall, ws.next()).await {
                Err(_) => {
                    self.stats.stalls += 1;
                    self.socket = None;
                    self.fail_over("no event within the stall timeout").await;
                    continue;
                }
                Ok(None) => {
                    self.socket = None;
                    self.fail_over("the server closed the connection").await;
                    continue;
                }
                Ok(Some(Err(e))) => {
                    self.socket = None;
                    self.fail_over(&e.to_string()).await;
                    continue;
                }
                Ok(Some(Ok(m))) => m,
            };
            let bytes = match msg {
                Message::Text(t) => Bytes::from(t),
                Message::Binary(b) => b,
                Message::Ping(p) => {
                    ws.send(Message::Pong(p)).await.ok();
                    continue;
                }
                Message::Close(_) => {
                    self.socket = None;
                    self.fail_over("the server closed the connection").await;
                    continue;
                }
                Message::Pong(_) | Message::Frame(_) => continue,
            };
            self.failures_in_a_row = 0;
            self.messages += 1;
            let offset = self.bytes_in;
            self.bytes_in += bytes.len() as u64;
            if self.repeat(&bytes) {
                self.overlap_dropped += 1;
                continue;
            }
            self.checkpoint();
            return Ok(Some(SourceLine {
                platform: Platform::Bluesky,
                unfiltered: true,
                bytes,
                origin: format!("jetstream#{}", self.stats.connections),
                line: self.messages,
                offset,
            }));
        }
    }

    fn stats(&self) -> SourceStats {
        self.stats.clone()
    }

    fn commit(&mut self) -> Result<(), IngestError> {
        let (Some(path), Some(time_us)) = (&self.cfg.cursor_file, self.last) else {
            return Ok(());
        };
        let c = Cursor {
            time_us,
            clean: true,
            ids: self.recent.iter().map(|(_, id)| id.clone()).collect(),
        };
        c.save(path)?;
        tracing::info!(time_us, ids = c.ids.len(), "Jetstream: resume point saved");
        Ok(())
    }
}
