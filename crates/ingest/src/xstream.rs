//! The X API v2 filtered stream, with the connection loop owned here.
//!
//! `twitter-v2` (the crate) models payloads and rules but hard-codes `api.twitter.com` and
//! never reconnects, so flagship keeps its own client (reqwest) and its own payload model
//! (`flagship_platforms::x`, which also accepts the numeric rule ids of 2021 captures).
//!
//! - Rules: [`XStream::sync_rules`] reads the current rules, validates the missing ones with
//!   `dry_run=true`, then adds them (tagged `flagship:<mission>:n`) and deletes the stale ones
//!   *of this mission only*; other rules on the app are never touched; rule errors are fatal.
//! - Connection: `GET /2/tweets/search/stream` with the expansions and fields the core record
//!   needs. Reconnects follow [`crate::backoff`] (X's documented schedule); no byte for
//!   `stall` (X sends a keep-alive newline every 20 s; silence past 20 s plus a 10 s margin
//!   for late keep-alives) is a stall and reconnects;
//!   401 / 403 / 400 / 404 end the stream with a clear error instead of retrying forever.
//! - A line cut by a dropped connection is handed on as it is (it will be quarantined with its
//!   offset), never glued to the next connection's bytes.
//! - The bearer token (from `X_BEARER_TOKEN`, else `TWITTER_BEARER_TOKEN`) is never logged.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;

use crate::IngestError;
use crate::backoff::{Backoff, Disposition, Failure, classify_status};
use crate::source::{PostSource, SourceLine, SourceStats};

pub const DEFAULT_BASE_URL: &str = "https://api.x.com";

/// Query parameters of the stream request: what `flagship_core::Post` is built from.
pub const STREAM_PARAMS: [(&str, &str); 4] = [
    ("expansions", "author_id,referenced_tweets.id,geo.place_id"),
    (
        "tweet.fields",
        "created_at,lang,source,author_id,conversation_id,in_reply_to_user_id,referenced_tweets,entities,public_metrics,possibly_sensitive,withheld,edit_history_tweet_ids,geo,note_tweet",
    ),
    (
        "user.fields",
        "username,name,location,verified,public_metrics,created_at",
    ),
    ("place.fields", "full_name,country_code"),
];

/// The bearer token from the environment (never printed).
pub fn token_from_env() -> Result<String, IngestError> {
    token_from("X_BEARER_TOKEN")
}

/// The bearer token from `var` (the config's `sources.x.token_env`), else
/// `TWITTER_BEARER_TOKEN` (never printed).
pub fn token_from(var: &str) -> Result<String, IngestError> {
    [var, "TWITTER_BEARER_TOKEN"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .ok_or_else(|| {
            IngestError::Fatal(format!(
                "no bearer token: set {var} (or TWITTER_BEARER_TOKEN) to an X API v2 app token — or use a free source: --source bluesky / --source mastodon"
            ))
        })
}

#[derive(Clone)]
pub struct XStreamConfig {
    pub base_url: String,
    pub token: String,
    /// No byte for this long is a stall (X: a keep-alive every 20 s, plus a margin).
    pub stall: Duration,
    /// Record the reconnect waits without sleeping (tests: a virtual clock).
    pub virtual_waits: bool,
}

impl std::fmt::Debug for XStreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("XStreamConfig")
            .field("base_url", &self.base_url)
            .field("token", &"<redacted>")
            .field("stall", &self.stall)
            .finish()
    }
}

impl XStreamConfig {
    pub fn new(base_url: &str, token: String) -> XStreamConfig {
        XStreamConfig {
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
            stall: STALL,
            virtual_waits: false,
        }
    }
}

/// What rule sync did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSync {
    pub kept: usize,
    pub added: Vec<String>,
    pub deleted: Vec<String>,
    /// Rules on the app that are not this mission's (other missions', other tools'): left as
    /// they are.
    pub foreign: usize,
}

/// No byte for this long is a stall: X's keep-alive interval (20 s) plus 10 s, as keep-alives
/// arrive late under load (exactly 20 s reconnected healthy streams).
pub const STALL: Duration = Duration::from_secs(30);

/// The tag prefix that marks a stream rule as this mission's: `flagship:<mission>:`.
pub fn rule_tag_prefix(mission: &str) -> String {
    format!("flagship:{mission}:")
}

/// Whether a rule tag is this mission's: exactly `flagship:<mission>:<n>`, or the untagged
/// `flagship-<n>` of versions before mission tags (taken over once, so upgrades leave no
/// orphan rules behind).
fn is_ours(tag: &str, prefix: &str) -> bool {
    let numbered = |rest: &str| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
    tag.strip_prefix(prefix).is_some_and(numbered)
        || tag.strip_prefix("flagship-").is_some_and(numbered)
}

#[derive(Deserialize)]
struct Rules {
    #[serde(default)]
    data: Vec<Rule>,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Rule {
    id: flagship_platforms::x::Id,
    value: String,
    #[serde(default)]
    tag: Option<String>,
}

type Body = std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<Bytes>> + Send>>;

pub struct XStream {
    cfg: XStreamConfig,
    client: reqwest::Client,
    backoff: Backoff,
    body: Option<Body>,
    buf: Vec<u8>,
    offset: u64,
    line: u64,
    stats: SourceStats,
}

impl XStream {
    pub fn new(cfg: XStreamConfig) -> Result<XStream, IngestError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("flagship/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| IngestError::Fatal(format!("HTTP client: {e}")))?;
        Ok(XStream {
            cfg,
            client,
            backoff: Backoff::default(),
            body: None,
            buf: Vec::new(),
            offset: 0,
            line: 0,
            stats: SourceStats::default(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.base_url)
    }

    async fn rules_call(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Rules, IngestError> {
        let resp = req
            .bearer_auth(&self.cfg.token)
            .send()
            .await
            .map_err(|e| IngestError::Fatal(format!("{what}: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(IngestError::Fatal(format!(
                "{what}: HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        let rules: Rules = serde_json::from_str(&text)
            .map_err(|e| IngestError::Fatal(format!("{what}: unexpected reply ({e})")))?;
        if !rules.errors.is_empty() {
            return Err(IngestError::Fatal(format!(
                "{what}: rule errors: {}",
                serde_json::to_string(&rules.errors).unwrap_or_default()
            )));
        }
        Ok(rules)
    }

    /// Makes the mission's rules exactly `wanted`: validate (dry run), add, delete stale. Only
    /// rules tagged `flagship:<mission>:…` are this mission's; every other rule on the app
    /// (another mission's, another tool's) is left alone. An empty `wanted` is refused: it
    /// would leave the mission streaming nothing.
    pub async fn sync_rules(
        &self,
        mission: &str,
        wanted: &[String],
    ) -> Result<RuleSync, IngestError> {
        if wanted.is_empty() {
            return Err(IngestError::Fatal(format!(
                "mission `{mission}` has no stream rules (mission.stream.track is empty): refusing to sync"
            )));
        }
        let prefix = rule_tag_prefix(mission);
        let url = self.url("/2/tweets/search/stream/rules");
        let current = self
            .rules_call(self.client.get(&url), "reading stream rules")
            .await?;
        let ours = |r: &Rule| r.tag.as_deref().is_some_and(|t| is_ours(t, &prefix));
        let have: Vec<&str> = current.data.iter().map(|r| r.value.as_str()).collect();
        let add: Vec<String> = wanted
            .iter()
            .filter(|w| !have.contains(&w.as_str()))
            .cloned()
            .collect();
        let delete: Vec<&Rule> = current
            .data
            .iter()
            .filter(|r| ours(r) && !wanted.contains(&r.value))
            .collect();
        let foreign = current.data.iter().filter(|r| !ours(r)).count();
        if !add.is_empty() {
            let body = serde_json::json!({
                "add": add.iter().enumerate().map(|(i, v)| serde_json::json!({"value": v, "tag": format!("{prefix}{}", i + 1)})).collect::<Vec<_>>()
            });
            for dry in [true, false] {
                self.rules_call(
                    self.client
                        .post(&url)
                        .query(&[("dry_run", dry.to_string())])
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.to_string()),
                    if dry {
                        "validating stream rules (dry run)"
                    } else {
                        "adding stream rules"
                    },
                )
                .await?;
            }
        }
        if !delete.is_empty() {
            let ids: Vec<String> = delete.iter().map(|r| r.id.0.to_string()).collect();
            self.rules_call(
                self.client
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(serde_json::json!({"delete": {"ids": ids}}).to_string()),
                "deleting stale stream rules",
            )
            .await?;
        }
        Ok(RuleSync {
            kept: wanted.len() - add.len(),
            added: add,
            deleted: delete.iter().map(|r| r.value.clone()).collect(),
            foreign,
        })
    }

    async fn wait(&mut self, failure: Failure) {
        let d = self.backoff.next_delay(failure);
        match failure {
            Failure::Network => self.stats.network_errors += 1,
            Failure::Http => self.stats.http_errors += 1,
            Failure::RateLimited => self.stats.rate_limited += 1,
        }
        self.stats.waits.push(d);
        tracing::warn!(
            ?failure,
            wait_ms = d.as_millis() as u64,
            "stream: reconnecting"
        );
        if !self.cfg.virtual_waits {
            tokio::time::sleep(d).await;
        }
    }

    async fn connect(&mut self) -> Result<(), IngestError> {
        loop {
            let request = self
                .client
                .get(self.url("/2/tweets/search/stream"))
                .bearer_auth(&self.cfg.token)
                .query(&STREAM_PARAMS)
                .send();
            // A server that accepts but never answers is a stall too.
            let sent = match tokio::time::timeout(self.cfg.stall, request).await {
                Ok(r) => r,
                Err(_) => {
                    self.stats.stalls += 1;
                    tracing::warn!("stream: no response headers within {:?}", self.cfg.stall);
                    self.wait(Failure::Network).await;
                    continue;
                }
            };
            match sent {
                Err(e) => {
                    tracing::debug!("stream: connect failed: {e}");
                    self.wait(Failure::Network).await;
                }
                Ok(r) if r.status().is_success() => {
                    self.stats.connections += 1;
                    if self.stats.connections > 1 {
                        self.stats.reconnects += 1;
                    }
                    self.body = Some(Box::pin(r.bytes_stream()));
                    self.offset = 0;
                    self.line = 0;
                    return Ok(());
                }
                Ok(r) => {
                    let status = r.status();
                    match classify_status(status.as_u16()) {
                        Disposition::Fatal => {
                            let text = r.text().await.unwrap_or_default();
                            return Err(IngestError::Fatal(format!(
                                "the stream refused the connection: HTTP {status}{}: {}",
                                match status.as_u16() {
                                    401 => " (the bearer token is wrong or revoked)",
                                    403 =>
                                        " (this app's access level cannot use the filtered stream)",
                                    _ => "",
                                },
                                text.chars().take(300).collect::<String>()
                            )));
                        }
                        Disposition::Retry(f) => self.wait(f).await,
                    }
                }
            }
        }
    }

    fn take_line(&mut self, end: usize, skip: usize) -> SourceLine {
        let rest = self.buf.split_off(end + skip);
        let mut body = std::mem::replace(&mut self.buf, rest);
        body.truncate(end);
        if body.ends_with(b"\r") {
            body.pop();
        }
        self.line += 1;
        let l = SourceLine {
            platform: flagship_core::Platform::X,
            unfiltered: false,
            bytes: Bytes::from(body),
            origin: format!("stream#{}", self.stats.connections),
            line: self.line,
            offset: self.offset,
        };
        self.offset += (end + skip) as u64;
        l
    }
}

#[async_trait::async_trait]
impl PostSource for XStream {
    async fn next_line(&mut self) -> Result<Option<SourceLine>, IngestError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(Some(self.take_line(i, 1)));
            }
            if self.body.is_none() {
                self.connect().await?;
            }
            let body = self.body.as_mut().expect("connected above");
            let failure = match tokio::time::timeout(self.cfg.stall, body.next()).await {
                Ok(Some(Ok(chunk))) => {
                    if !chunk.is_empty() {
                        self.backoff.reset();
                    }
                    self.buf.extend_from_slice(&chunk);
                    continue;
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!("stream: read failed: {e}");
                    Failure::Network
                }
                Ok(None) => Failure::Network,
                Err(_) => {
                    self.stats.stalls += 1;
                    tracing::warn!("stream: no data for {:?}: stalled", self.cfg.stall);
                    Failure::Network
                }
            };
            self.body = None;
            let cut = (!self.buf.is_empty()).then(|| {
                let n = self.buf.len();
                self.take_line(n, 0)
            });
            self.wait(failure).await;
            if let Some(l) = cut {
                return Ok(Some(l));
            }
        }
    }

    fn stats(&self) -> SourceStats {
        self.stats.clone()
    }

    fn buffered(&mut self) -> Vec<SourceLine> {
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            out.push(self.take_line(i, 1));
        }
        if !self.buf.is_empty() {
            let n = self.buf.len();
            out.push(self.take_line(n, 0));
        }
        out
    }
}
