//! `flagship.toml`: the mission profile, storage locations, split sizes, model settings,
//! business constants and monitoring thresholds.
//!
//! The defaults live in one file, `default.toml` (embedded; `flagship config defaults`
//! prints it). A user's file is merged over it key by key — except the `wanted` / `unwanted`
//! term maps, which a profile replaces whole — and an unknown key or a wrong type is an error
//! naming the file and the key's path (`model.epochz`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::location::{Location, LocationError, S3Options};

/// The defaults, with every key documented.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// A v2 filtered-stream rule may hold at most this many characters.
pub const MAX_RULE_LEN: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {message}")]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: {source}")]
    Location {
        path: PathBuf,
        #[source]
        source: Box<LocationError>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub mission: Mission,
    pub storage: Storage,
    pub split: Split,
    pub model: Model,
    pub business: Business,
    pub monitor: Monitor,
    pub sources: Sources,
    #[serde(default)]
    pub pipeline: Pipeline,
    pub desk: Desk,
    #[serde(default)]
    pub reply: Reply,
    /// Folder relative locations are resolved against (the config file's folder).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mission {
    pub name: String,
    pub stream: Stream,
    pub filter: Filter,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    pub track: Vec<String>,
    pub lang: Option<String>,
    pub exclude_retweets: bool,
}

/// The live sources: which are on (when `--source` is not given) and how to reach them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    pub x: XSource,
    pub bluesky: BlueskySource,
    pub mastodon: MastodonSource,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XSource {
    pub enabled: bool,
    pub base_url: String,
    /// The environment variable holding the app's bearer token.
    pub token_env: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlueskySource {
    pub enabled: bool,
    /// Jetstream `subscribe` endpoints, tried in order (the next one after a failure).
    pub endpoints: Vec<String>,
    /// Where the resume point is kept (a path; relative to the config's folder).
    pub cursor: String,
    /// How far before the saved point a reconnect resumes (the overlap is dropped by id).
    pub rewind_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MastodonSource {
    pub enabled: bool,
    /// Instances (`mastodon.social` or `https://…`); each is streamed.
    pub instances: Vec<String>,
    /// Hashtag timelines streamed on every instance (no `#`).
    pub hashtags: Vec<String>,
    /// Also each instance's public timeline (matched against `mission.stream.track` here).
    pub public: bool,
    /// Per instance (its host, `mastodon.social`, as `instances` names it): the environment
    /// variable holding that instance's access token, sent to that instance only (used when
    /// set; some instances require one for streaming).
    #[serde(default)]
    pub token_envs: BTreeMap<String, String>,
    /// The older single variable: valid only with one instance (a token belongs to one).
    #[serde(default)]
    pub token_env: Option<String>,
}

impl MastodonSource {
    /// The variable holding `instance`'s token, if the config names one.
    pub fn token_env_of(&self, instance: &str) -> Option<&str> {
        let host = instance_host(instance);
        self.token_envs
            .iter()
            .find(|(k, _)| instance_host(k) == host)
            .map(|(_, v)| v.as_str())
            .or(match self.instances.len() {
                1 => self.token_env.as_deref(),
                _ => None,
            })
    }

    /// Every token variable the config names (for the streaming host's secrets).
    pub fn token_vars(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.token_envs.values().map(String::as_str).collect();
        v.extend(self.token_env.as_deref());
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// An instance's host as the config's keys name it: `https://Mastodon.social/` →
/// `mastodon.social`; `http://127.0.0.1:8080` → `127.0.0.1:8080`.
pub fn instance_host(instance: &str) -> String {
    let i = instance.trim();
    let i = i
        .strip_prefix("https://")
        .or_else(|| i.strip_prefix("http://"))
        .unwrap_or(i);
    i.split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// `http://` to a loopback host (where plain HTTP never leaves the machine): the one place
/// plain HTTP may carry a token (the sources' instances, the reply accounts' endpoints).
pub fn loopback_http(instance: &str) -> bool {
    let Some(rest) = instance.trim().strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    !authority.contains('@')
        && (host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()))
}

/// A name a shell and systemd take as an environment variable.
fn env_name_ok(name: &str) -> bool {
    name.bytes().next().is_some_and(|b| !b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Config {
    /// A path setting resolved against the config's folder.
    pub fn path(&self, p: &str) -> PathBuf {
        self.base_dir.join(p)
    }
}

/// Term groups by name: `wanted.words`, `unwanted.crypto`…
pub type TermGroups = BTreeMap<String, Vec<String>>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub min_words: u32,
    pub substring: bool,
    pub wanted: TermGroups,
    pub unwanted: TermGroups,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    pub raw: String,
    pub combined: String,
    pub filtered: String,
    pub processed: String,
    pub splits: String,
    pub models: String,
    pub reports: String,
    pub quarantine: String,
    /// The triage desk's SQLite database (a local path).
    pub desk: String,
    #[serde(default)]
    pub s3: S3Options,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    pub test_size: usize,
    pub val_size: usize,
    #[serde(default)]
    pub labels: Option<String>,
    /// Also read labels from the triage desk's decisions (`storage.desk`); a decision
    /// replaces the labels file's label of the same post.
    #[serde(default)]
    pub desk_labels: bool,
    /// With `desk_labels`: also the decisions made for a whole question group at once (off:
    /// only posts a person decided one by one).
    #[serde(default = "yes")]
    pub desk_bulk_labels: bool,
}

fn yes() -> bool {
    true
}

/// Which model a folder holds / training makes: written once, read by the config, the model
/// crate (its card) and the `--model-kind` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Fine-tune the pre-trained transformer (libtorch).
    Transformer,
    /// TF-IDF (word + char n-grams) + logistic regression: the instant baseline.
    Linear,
}

impl std::str::FromStr for ModelKind {
    type Err = String;

    fn from_str(s: &str) -> Result<ModelKind, String> {
        match s {
            "transformer" => Ok(ModelKind::Transformer),
            "linear" => Ok(ModelKind::Linear),
            other => Err(format!(
                "model kind {other:?}: use `transformer` or `linear`"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    #[serde(default)]
    pub base: Option<String>,
    pub kind: ModelKind,
    pub max_length: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub weight_decay: f64,
    pub warmup_ratio: f64,
    pub seed: u64,
    pub class_weights: bool,
    pub early_stopping_patience: usize,
    pub expected_need_support_rate: f64,
    /// How the encoder's tokens become one vector (`auto`: what the base was trained with).
    pub pooling: Pooling,
    /// 2: needs support or not; 3: negative / neutral / positive, P(need) = P(neg) + P(neu).
    pub classes: u8,
    /// Layer-wise learning-rate decay: each layer below the head learns this much slower
    /// than the one above it (1.0: one rate for all).
    pub layer_decay: f64,
    /// Keep only the base's first this many layers (absent: all): a shallower, faster model,
    /// the layers above dropped before fine-tuning.
    #[serde(default)]
    pub layers: Option<usize>,
    /// Weight of the linear baseline in a probability average with the transformer (0: off).
    pub linear_weight: f64,
    /// The arithmetic of the matrix products, in training and scoring.
    pub precision: Arithmetic,
    /// Which threshold the team works at, chosen on validation at the expected rate.
    pub operating_point: OperatingRule,
    /// `minutes`: a missed post costs this many times a needless read, minute for minute.
    pub miss_cost: f64,
    /// `capacity`: flag at most this share of posts…
    pub capacity_share: f64,
    /// …or at most this many posts an hour, given `expected_posts_per_hour`.
    #[serde(default)]
    pub capacity_per_hour: Option<f64>,
    #[serde(default)]
    pub expected_posts_per_hour: Option<f64>,
    /// `recall`: the highest threshold that still catches this share of posts needing support.
    pub recall_floor: f64,
    /// A teacher's soft-label file (`flagship teacher-labels`): the student learns from it too.
    #[serde(default)]
    pub teacher_labels: Option<String>,
    /// The softmax temperature of a distilled run.
    pub distill_temperature: f64,
    /// The weight of the soft labels' loss in a distilled run (the hard labels get the rest).
    pub distill_alpha: f64,
    /// Early exit: the share of validation decisions a served post's leaving before the top
    /// layer may change (0: every post reads every layer).
    #[serde(default = "default_early_exit")]
    pub early_exit: f64,
    /// Early exit in a hurry: the share a live loop that has fallen behind (a launch burst)
    /// may change, scoring its micro-batches with looser margins until it catches up
    /// (`--hurry-after`); at most `early_exit`: none. `early_exit` 0 turns off both.
    #[serde(default = "default_early_exit_hurried")]
    pub early_exit_hurried: f64,
}

/// `model.early_exit`'s default: one validation decision in 500 may differ from the full
/// model's (docs/model.md#early-exit).
pub const EARLY_EXIT: f64 = 0.002;

fn default_early_exit() -> f64 {
    EARLY_EXIT
}

/// `model.early_exit_hurried`'s default: one validation decision in 20. The demo's model then
/// reads 36 % of the layers' work on held-out posts against 59 % with care, at the same
/// recall and 2.5 points less precision (F2 −0.006); 0.02 read 45 % for F2 −0.004, and held a
/// burst less well (docs/model.md#in-a-hurry).
pub const EARLY_EXIT_HURRIED: f64 = 0.05;

fn default_early_exit_hurried() -> f64 {
    EARLY_EXIT_HURRIED
}

/// An early-exit budget (`model.early_exit`, `flagship exits --budget`) lies in [0, 0.05].
pub fn check_early_exit(budget: f64) -> Result<(), String> {
    if (0.0..=0.05).contains(&budget) {
        Ok(())
    } else {
        Err(format!(
            "must lie in [0, 0.05] (a share of validation decisions), got {budget}"
        ))
    }
}

impl Model {
    /// The operating-point settings of this table.
    pub fn operating(&self) -> crate::operating::Settings {
        let share = match (self.capacity_per_hour, self.expected_posts_per_hour) {
            (Some(n), Some(volume)) if volume > 0.0 => self.capacity_share.min(n / volume),
            _ => self.capacity_share,
        };
        crate::operating::Settings {
            rule: self.operating_point,
            miss_cost: self.miss_cost,
            capacity_share: share,
            recall_floor: self.recall_floor,
        }
    }
}

/// `model.precision`: the arithmetic of a transformer's matrix products (master weights,
/// LayerNorm and softmax stay f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arithmetic {
    /// bf16 where the hardware multiplies it natively and faster (CUDA; AVX-512 BF16 where a
    /// bf16 product measures faster than f32), else f32.
    #[default]
    Auto,
    F32,
    Bf16,
}

impl std::str::FromStr for Arithmetic {
    type Err = String;

    fn from_str(s: &str) -> Result<Arithmetic, String> {
        match s {
            "auto" => Ok(Arithmetic::Auto),
            "f32" => Ok(Arithmetic::F32),
            "bf16" => Ok(Arithmetic::Bf16),
            other => Err(format!("precision {other:?}: use `auto`, `f32` or `bf16`")),
        }
    }
}

/// How a transformer's token vectors become one vector for the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean for a sentence-transformers checkpoint (its `1_Pooling/config.json` says so),
    /// else the family's first-token head.
    #[default]
    Auto,
    /// The first token (`[CLS]`/`<s>`) through the family's head, as `transformers` does.
    Cls,
    /// The mean of the real tokens' last hidden states (sentence-transformers' pooling).
    Mean,
}

impl std::str::FromStr for Pooling {
    type Err = String;

    fn from_str(s: &str) -> Result<Pooling, String> {
        match s {
            "auto" => Ok(Pooling::Auto),
            "cls" => Ok(Pooling::Cls),
            "mean" => Ok(Pooling::Mean),
            other => Err(format!("pooling {other:?}: use `auto`, `cls` or `mean`")),
        }
    }
}

/// `model.operating_point`: what the threshold is chosen for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperatingRule {
    /// The highest F2 (the seed's research metric).
    F2,
    /// The fewest minutes wasted + `miss_cost` × minutes missed.
    Minutes,
    /// The most posts caught within the team's reading capacity.
    Capacity,
    /// The highest threshold that still meets `recall_floor`.
    Recall,
}

impl OperatingRule {
    pub const ALL: [OperatingRule; 4] = [
        OperatingRule::F2,
        OperatingRule::Minutes,
        OperatingRule::Capacity,
        OperatingRule::Recall,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OperatingRule::F2 => "f2",
            OperatingRule::Minutes => "minutes",
            OperatingRule::Capacity => "capacity",
            OperatingRule::Recall => "recall",
        }
    }
}

impl std::str::FromStr for OperatingRule {
    type Err = String;

    fn from_str(s: &str) -> Result<OperatingRule, String> {
        OperatingRule::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                format!("operating point {s:?}: use `f2`, `minutes`, `capacity` or `recall`")
            })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Business {
    pub reading_wpm: f64,
    pub typing_wpm: f64,
    pub reply_fraction: f64,
    pub naive_repeats: usize,
    pub naive_seed: u64,
}

impl Business {
    /// Seconds to read a post of `words` words.
    pub fn reading_seconds(&self, words: u32) -> f64 {
        words as f64 / self.reading_wpm * 60.0
    }

    /// Seconds to read it and type a reply (for the share of support posts that need one).
    pub fn response_seconds(&self, words: u32) -> f64 {
        self.reading_seconds(words) + words as f64 * self.reply_fraction / self.typing_wpm * 60.0
    }
}

/// The triage desk's server (`flagship desk`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desk {
    /// Address the page is served on. Anything but loopback needs an auth method.
    pub bind: std::net::SocketAddr,
    /// A users file (`name:$argon2id$…` per line, made by `flagship desk user add`).
    #[serde(default)]
    pub users: Option<String>,
    /// An environment variable holding a shared access token (a login, or
    /// `Authorization: Bearer` for scripts).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Mark the session cookie `Secure` (the desk is behind TLS).
    pub secure_cookie: bool,
    /// The uncertain tab: posts within this distance of the threshold, on both sides.
    pub uncertain_band: f64,
    /// Posts per view.
    pub page_size: usize,
    /// Proxies (IP addresses or CIDRs) whose `Forwarded` (preferred, RFC 7239) or
    /// `X-Forwarded-For` header names the client: the rightmost address not listed here.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Seconds a request's head may take, from the connection opening or the previous answer
    /// (so also how long a kept-alive connection may sit idle).
    pub header_timeout_s: u64,
    /// Seconds a request (its body and the handler; not an event stream) may take.
    pub request_timeout_s: u64,
    /// Connections served at once (more wait to be accepted).
    pub max_connections: usize,
    /// Event streams (open pages) at once, in all and per session; more answer 429.
    pub max_streams: usize,
    pub max_streams_per_session: usize,
    /// A session ends after this many seconds without a request or an open page…
    pub session_idle_s: u64,
    /// …and this many after login, whatever happens.
    pub session_max_s: u64,
    /// Sessions one user may hold; a new one ends their oldest.
    pub sessions_per_user: usize,
    /// Question groups: the live loop embeds each flagged post with the base encoder and
    /// the desk groups the same question from many people into one card (off: every post
    /// is its own card, and no second encoder runs).
    pub groups: bool,
    /// The least cosine between a post's embedding and a group's centroid for the post to
    /// join the group (measured on a labelled paraphrase set: docs/desk.md).
    pub group_similarity: f32,
    /// A group with no new post for this many seconds closes (new posts like it open another).
    pub group_quiet_s: u64,
    /// Groups open at once (memory: this × 384 floats); beyond it the quietest closes.
    pub group_max_open: usize,
    /// The mission's Mastodon instance's post limit in characters (saved answers are checked
    /// against it; X's 280 and Bluesky's 300 are the platforms' own).
    pub mastodon_max_characters: usize,
    /// The first-response target (`"1h"`, `"30m"`): a post that needs a reply and has none
    /// this long after it reached the desk is overdue.
    #[serde(default = "default_first_response")]
    pub first_response: String,
    /// The time zone the desk's days are counted in (an IANA name: `"UTC"`,
    /// `"America/New_York"`).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Burst and group-growth alerts, and the webhook they go to.
    #[serde(default)]
    pub alerts: Alerts,
}

fn default_first_response() -> String {
    "1h".into()
}

fn default_timezone() -> String {
    "UTC".into()
}

/// `[desk.alerts]`: when the flagged volume jumps or a question group grows fast, a banner on
/// open pages and a webhook (docs/desk.md#alerts). Its `Debug` never shows the webhook's path
/// (a Slack URL is a credential).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// Flagged posts are counted over this window…
    pub burst_window_s: u64,
    /// …against the rate of the span before it (the recent baseline)…
    pub burst_baseline_s: u64,
    /// …and a burst is a count this unlikely under a Poisson law at that rate…
    pub burst_p_value: f64,
    /// …and at least this many posts.
    pub burst_min_count: u32,
    /// After a burst alert, none again this long (unless the count doubles).
    pub burst_cooldown_s: u64,
    /// A question group that this many different people joined…
    pub group_min_authors: u32,
    /// …within this window.
    pub group_window_s: u64,
    /// The webhook (`https://…`; plain `http://` to loopback only). Empty: banners only. A
    /// URL that is itself a credential (Slack's) belongs in the environment variable
    /// `webhook_url_env` instead, which wins when it is set.
    pub webhook: String,
    pub webhook_url_env: String,
    /// `slack` (`{"text": …}`, Slack-compatible) or `json` (the alert's fields, signed with
    /// HMAC-SHA256 in `X-Flagship-Signature`).
    pub webhook_format: String,
    /// The environment variable holding the HMAC secret (needed for `json`; signs `slack`
    /// too when set).
    pub webhook_secret_env: String,
    /// Seconds a delivery may take; a delivery is tried this many times in all, with
    /// backoff, across restarts.
    pub webhook_timeout_s: u64,
    pub webhook_max_attempts: u32,
    /// The first retry waits this many seconds, each next one twice as long (at most an hour).
    pub webhook_retry_s: u64,
}

impl Default for Alerts {
    fn default() -> Alerts {
        Alerts {
            burst_window_s: 600,
            burst_baseline_s: 6 * 3600,
            burst_p_value: 1e-4,
            burst_min_count: 6,
            burst_cooldown_s: 3600,
            group_min_authors: 10,
            group_window_s: 900,
            webhook: String::new(),
            webhook_url_env: "FLAGSHIP_DESK_WEBHOOK_URL".into(),
            webhook_format: "slack".into(),
            webhook_secret_env: "FLAGSHIP_DESK_WEBHOOK_SECRET".into(),
            webhook_timeout_s: 10,
            webhook_max_attempts: 12,
            webhook_retry_s: 30,
        }
    }
}

impl Alerts {
    fn validate(&self) -> Invalid {
        for (key, v) in [
            ("desk.alerts.burst_window_s", self.burst_window_s),
            ("desk.alerts.burst_baseline_s", self.burst_baseline_s),
            ("desk.alerts.group_window_s", self.group_window_s),
            ("desk.alerts.webhook_timeout_s", self.webhook_timeout_s),
            ("desk.alerts.webhook_retry_s", self.webhook_retry_s),
            (
                "desk.alerts.webhook_max_attempts",
                u64::from(self.webhook_max_attempts),
            ),
            (
                "desk.alerts.group_min_authors",
                u64::from(self.group_min_authors),
            ),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if self.burst_baseline_s < 6 * self.burst_window_s {
            return Err((
                "desk.alerts.burst_baseline_s",
                format!(
                    "must be at least 6 × burst_window_s ({}): the baseline is the recent past",
                    self.burst_window_s
                ),
            ));
        }
        if !(self.burst_p_value > 0.0 && self.burst_p_value < 0.5) {
            return Err((
                "desk.alerts.burst_p_value",
                format!("must lie in (0, 0.5), got {}", self.burst_p_value),
            ));
        }
        if let Err(e) = webhook_ok(&self.webhook) {
            return Err(("desk.alerts.webhook", e));
        }
        if !matches!(self.webhook_format.as_str(), "slack" | "json") {
            return Err((
                "desk.alerts.webhook_format",
                format!("{:?}: use slack or json", self.webhook_format),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("burst_window_s", &self.burst_window_s)
            .field("burst_baseline_s", &self.burst_baseline_s)
            .field("burst_p_value", &self.burst_p_value)
            .field("burst_min_count", &self.burst_min_count)
            .field("burst_cooldown_s", &self.burst_cooldown_s)
            .field("group_min_authors", &self.group_min_authors)
            .field("group_window_s", &self.group_window_s)
            .field("webhook", &redacted_url(&self.webhook))
            .field("webhook_url_env", &self.webhook_url_env)
            .field("webhook_format", &self.webhook_format)
            .field("webhook_secret_env", &self.webhook_secret_env)
            .field("webhook_timeout_s", &self.webhook_timeout_s)
            .field("webhook_max_attempts", &self.webhook_max_attempts)
            .field("webhook_retry_s", &self.webhook_retry_s)
            .finish()
    }
}

/// A URL as logs and errors may show it: its scheme and host, never its path or query (a
/// webhook's path can be its credential).
pub fn redacted_url(url: &str) -> String {
    if url.is_empty() {
        return String::new();
    }
    match url::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("(no host)")),
        Err(_) => "(not a URL)".into(),
    }
}

/// A webhook URL the desk may send to: empty (none), `https://…`, or `http://` to a loopback
/// address (anything else would carry the alerts, and a signature, in clear).
pub fn webhook_ok(url: &str) -> Result<(), String> {
    if url.is_empty() || url.starts_with("https://") || loopback_http(url) {
        Ok(())
    } else {
        Err(format!(
            "{}: write https://… (plain http:// only to a loopback address)",
            redacted_url(url)
        ))
    }
}

/// A duration as people write it: `90s`, `10m`, `1h`, `1.5h`, `250ms` (a bare number:
/// seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 10m or 2h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

impl Desk {
    /// The first-response target (validated with the config).
    pub fn first_response(&self) -> std::time::Duration {
        parse_duration(&self.first_response).unwrap_or(std::time::Duration::from_secs(3600))
    }

    /// The desk's time zone (validated with the config).
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.timezone.parse().unwrap_or(chrono_tz::UTC)
    }
}

/// `[reply]`: replies sent from the desk through the mission's own accounts. Only the names
/// of the environment variables holding the credentials are here, never the credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reply {
    /// Bluesky: the account's PDS (where it logs in and posts), the public AppView (handles
    /// and parents are read there), and the variables holding the handle and an app password.
    pub bluesky_pds: String,
    pub bluesky_appview: String,
    pub bluesky_handle_env: String,
    pub bluesky_password_env: String,
    /// Mastodon: the mission's home instance (`https://host`; empty: no Mastodon replies)
    /// and the variable holding its access token (scopes `write:statuses read:search
    /// read:accounts read:statuses`: a retry is checked against the account's statuses).
    pub mastodon_instance: String,
    pub mastodon_token_env: String,
    /// X: the API, the variable holding a user-context OAuth 2 token (`tweet.write`) and the
    /// one holding the account's numeric id (its recent posts are checked before a retry).
    pub x_base_url: String,
    pub x_token_env: String,
    pub x_user_id_env: String,
    /// Seconds one request to a platform may take (a send past it is "outcome unknown").
    pub timeout_s: u64,
}

impl Default for Reply {
    fn default() -> Reply {
        Reply {
            bluesky_pds: "https://bsky.social".into(),
            bluesky_appview: "https://public.api.bsky.app".into(),
            bluesky_handle_env: "FLAGSHIP_BLUESKY_HANDLE".into(),
            bluesky_password_env: "FLAGSHIP_BLUESKY_APP_PASSWORD".into(),
            mastodon_instance: String::new(),
            mastodon_token_env: "FLAGSHIP_MASTODON_REPLY_TOKEN".into(),
            x_base_url: "https://api.x.com".into(),
            x_token_env: "FLAGSHIP_X_USER_TOKEN".into(),
            x_user_id_env: "FLAGSHIP_X_USER_ID".into(),
            timeout_s: 15,
        }
    }
}

impl Reply {
    /// Every endpoint over HTTPS (plain HTTP to loopback only: it would carry the tokens in
    /// clear); a timeout of at least a second.
    fn validate(&self) -> Invalid {
        for (key, url) in [
            ("reply.bluesky_pds", &self.bluesky_pds),
            ("reply.bluesky_appview", &self.bluesky_appview),
            ("reply.mastodon_instance", &self.mastodon_instance),
            ("reply.x_base_url", &self.x_base_url),
        ] {
            if !(url.is_empty() || url.starts_with("https://") || loopback_http(url)) {
                return Err((
                    key,
                    format!(
                        "{url:?}: write https://… (plain http:// only to a loopback address: it would carry the account's credentials in clear)"
                    ),
                ));
            }
        }
        if self.timeout_s == 0 {
            return Err(("reply.timeout_s", "must be at least 1".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitor {
    pub batch_size: usize,
    pub drift_threshold: f64,
    /// Which moves are flagged: large and significant (default), or large (the seed's rule).
    pub drift_test: DriftTest,
    /// Significance level of `significant`, over all the statistics compared (Bonferroni).
    pub drift_alpha: f64,
}

/// `monitor.drift_test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftTest {
    /// A move beyond `drift_threshold` that a two-sample z-test finds significant.
    Significant,
    /// Any move beyond `drift_threshold` (the seed's rule).
    Relative,
}

/// What `flagship pipeline` adds to the stage settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Recorded X API v2 payloads (file or folder) replayed into `storage.raw` as the ingest
    /// stage. Unset: the raw location is fed by `flagship ingest run` (a service), and the
    /// pipeline starts at combine.
    #[serde(default)]
    pub replay: Option<String>,
    /// Tweets created up to this time form the initial split; later ones become monitoring
    /// batches. Unset: every candidate is in the initial split and monitor has nothing to do.
    #[serde(default)]
    pub split_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Stop fine-tuning after this many optimizer steps (a quick run); unset: `model.epochs`.
    #[serde(default)]
    pub max_steps: Option<usize>,
}

/// The storage locations by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Raw,
    Combined,
    Filtered,
    Processed,
    Splits,
    Models,
    Reports,
    Quarantine,
}

impl Default for Config {
    /// The JWST defaults, relative paths resolved against the current folder.
    fn default() -> Self {
        let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Config::from_toml_str("", Path::new("<defaults>"), &base)
            .expect("the embedded default.toml is valid")
    }
}

impl Config {
    /// Reads `path` and merges it over the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::path::absolute(&base).unwrap_or(base);
        Config::from_toml_str(&text, path, &base)
    }

    /// Parses `text` (named `origin` in errors) over the defaults.
    pub fn from_toml_str(
        text: &str,
        origin: &Path,
        base_dir: &Path,
    ) -> Result<Config, ConfigError> {
        let syntax = |e: toml::de::Error| ConfigError::Syntax {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        };
        let mut merged: toml::Table = toml::from_str(DEFAULT_TOML).expect("default.toml parses");
        let user: toml::Table = toml::from_str(text).map_err(syntax)?;
        merge(&mut merged, user);
        let mut cfg: Config = serde_path_to_error::deserialize(toml::Value::Table(merged))
            .map_err(|e| ConfigError::Key {
                path: origin.to_owned(),
                key: e.path().to_string(),
                // toml appends "in `table`" lines; the path already says where.
                message: e
                    .inner()
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            })?;
        cfg.base_dir = base_dir.to_owned();
        cfg.validate().map_err(|(key, message)| ConfigError::Key {
            path: origin.to_owned(),
            key: key.to_owned(),
            message,
        })?;
        for area in Area::ALL {
            cfg.location(area).map_err(|source| ConfigError::Location {
                path: origin.to_owned(),
                source: Box::new(source),
            })?;
        }
        Ok(cfg)
    }

    /// Every section's own checks; the first problem, as (key, what is wrong).
    fn validate(&self) -> Invalid {
        self.mission.validate()?;
        self.sources.validate()?;
        self.split.validate()?;
        self.model.validate()?;
        self.business.validate()?;
        self.monitor.validate()?;
        self.reply.validate()?;
        self.desk.validate()
    }

    /// The desk's database (`storage.desk`, resolved against the config's folder).
    pub fn desk_database(&self) -> PathBuf {
        self.path(&self.storage.desk)
    }

    /// The model folder the pipeline trains and the live commands load by default:
    /// `<storage.models>/need-support`.
    pub fn model_dir(&self) -> Result<Location, LocationError> {
        Ok(self.location(Area::Models)?.join(MODEL_DIR))
    }

    /// The parsed location of one storage area.
    pub fn location(&self, area: Area) -> Result<Location, LocationError> {
        let s = &self.storage;
        let raw = match area {
            Area::Raw => &s.raw,
            Area::Combined => &s.combined,
            Area::Filtered => &s.filtered,
            Area::Processed => &s.processed,
            Area::Splits => &s.splits,
            Area::Models => &s.models,
            Area::Reports => &s.reports,
            Area::Quarantine => &s.quarantine,
        };
        Location::parse(raw, &self.base_dir)
    }

    /// The config as TOML (what `flagship config show` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }
}

/// A config check's outcome: the first problem as (key, what is wrong).
type Invalid = Result<(), (&'static str, String)>;

/// The folder under `storage.models` that holds the served model.
pub const MODEL_DIR: &str = "need-support";

fn positive(key: &'static str, v: f64) -> Invalid {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err((key, format!("must be a positive number, got {v}")))
    }
}

/// A fraction in (0, 1) when `open`, else in [0, 1].
fn fraction(key: &'static str, v: f64, open: bool) -> Invalid {
    let ok = if open {
        v > 0.0 && v < 1.0
    } else {
        (0.0..=1.0).contains(&v)
    };
    if ok {
        Ok(())
    } else {
        let range = if open { "(0, 1)" } else { "[0, 1]" };
        Err((key, format!("must be a fraction in {range}, got {v}")))
    }
}

fn at_least_one(key: &'static str, v: usize, why: &str) -> Invalid {
    if v == 0 {
        return Err((key, format!("must be at least 1{why}")));
    }
    Ok(())
}

impl Mission {
    fn validate(&self) -> Invalid {
        // No wanted group at all keeps every topic (the demo profile); a group without terms
        // could never match and would drop everything, so it is a mistake.
        if let Some((g, _)) = self
            .filter
            .wanted
            .iter()
            .find(|(_, t)| t.iter().all(|t| t.trim().is_empty()))
        {
            return Err((
                "mission.filter.wanted",
                format!("group `{g}` has no terms (remove it to keep every topic)"),
            ));
        }
        if self.stream.track.iter().any(|t| t.trim().is_empty()) {
            return Err(("mission.stream.track", "holds an empty term".into()));
        }
        // The name tags the mission's stream rules (`flagship:<name>:n`) and names objects.
        let name = &self.name;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err((
                "mission.name",
                format!("{name:?}: use letters, digits, `_` and `-` only"),
            ));
        }
        if self.stream.track.is_empty() {
            return Err((
                "mission.stream.track",
                "is empty: the stream would match nothing (list the mission's terms)".into(),
            ));
        }
        if let Some(r) = self
            .stream
            .rules()
            .into_iter()
            .find(|r| r.len() > MAX_RULE_LEN)
        {
            return Err((
                "mission.stream.track",
                format!(
                    "a term makes a {}-character rule; X allows {MAX_RULE_LEN}: {}…",
                    r.len(),
                    r.chars().take(60).collect::<String>()
                ),
            ));
        }
        Ok(())
    }
}

impl Sources {
    fn validate(&self) -> Invalid {
        if self.bluesky.endpoints.is_empty() {
            return Err((
                "sources.bluesky.endpoints",
                "is empty: list at least one Jetstream endpoint".into(),
            ));
        }
        if let Some(e) = self
            .bluesky
            .endpoints
            .iter()
            .find(|e| !(e.starts_with("wss://") || e.starts_with("ws://")))
        {
            return Err((
                "sources.bluesky.endpoints",
                format!("{e:?} is not a ws:// or wss:// URL"),
            ));
        }
        let md = &self.mastodon;
        if md.enabled && (md.instances.is_empty() || (md.hashtags.is_empty() && !md.public)) {
            return Err((
                "sources.mastodon",
                "is enabled with nothing to stream: list `instances` and `hashtags` (or set `public`)"
                    .into(),
            ));
        }
        if let Some(h) = md
            .hashtags
            .iter()
            .find(|h| h.is_empty() || h.starts_with('#'))
        {
            return Err((
                "sources.mastodon.hashtags",
                format!("{h:?}: write tags without `#`"),
            ));
        }
        md.validate_tokens()
    }
}

impl MastodonSource {
    /// Instances over HTTPS (plain HTTP to loopback only); each token variable names one
    /// listed instance.
    fn validate_tokens(&self) -> Invalid {
        for i in &self.instances {
            let scheme_ok = i.starts_with("https://") || !i.contains("://") || loopback_http(i);
            if !scheme_ok || instance_host(i).is_empty() || instance_host(i).contains('@') {
                return Err((
                    "sources.mastodon.instances",
                    format!(
                        "{i:?}: write `host` or `https://host` (plain http:// only to a loopback address: it would carry the stream and the token in clear)"
                    ),
                ));
            }
        }
        if let Some(var) = &self.token_env {
            if self.instances.len() > 1 {
                return Err((
                    "sources.mastodon.token_env",
                    format!(
                        "names one token for {} instances, but a token belongs to one instance: name each instance's variable in `token_envs` (`token_envs = {{ \"{}\" = \"MASTODON_TOKEN_…\" }}`) and remove `token_env`",
                        self.instances.len(),
                        instance_host(&self.instances[0])
                    ),
                ));
            }
            if !self.token_envs.is_empty() {
                return Err((
                    "sources.mastodon.token_env",
                    format!("{var:?}: use `token_envs` or `token_env`, not both"),
                ));
            }
        }
        for (instance, var) in &self.token_envs {
            let host = instance_host(instance);
            if !self.instances.iter().any(|i| instance_host(i) == host) {
                return Err((
                    "sources.mastodon.token_envs",
                    format!(
                        "{instance:?} is not in `instances`: a token is sent only to the instance it names"
                    ),
                ));
            }
            if self
                .token_envs
                .keys()
                .filter(|k| instance_host(k) == host)
                .count()
                > 1
            {
                return Err((
                    "sources.mastodon.token_envs",
                    format!("{host:?} is named twice"),
                ));
            }
            if !env_name_ok(var) {
                return Err((
                    "sources.mastodon.token_envs",
                    format!(
                        "{instance:?} = {var:?}: not an environment variable name (letters, digits, `_`)"
                    ),
                ));
            }
        }
        if let Some(var) = self.token_env.as_ref().filter(|v| !env_name_ok(v)) {
            return Err((
                "sources.mastodon.token_env",
                format!("{var:?}: not an environment variable name (letters, digits, `_`)"),
            ));
        }
        Ok(())
    }
}

impl Split {
    fn validate(&self) -> Invalid {
        let why = " (an empty split cannot be scored)";
        at_least_one("split.test_size", self.test_size, why)?;
        at_least_one("split.val_size", self.val_size, why)
    }
}

impl Model {
    fn validate(&self) -> Invalid {
        positive("model.learning_rate", self.learning_rate)?;
        fraction(
            "model.expected_need_support_rate",
            self.expected_need_support_rate,
            true,
        )?;
        fraction("model.warmup_ratio", self.warmup_ratio, false)?;
        if !matches!(self.classes, 2 | 3) {
            return Err((
                "model.classes",
                format!("must be 2 or 3, got {}", self.classes),
            ));
        }
        if !(self.layer_decay > 0.0 && self.layer_decay <= 1.0) {
            return Err((
                "model.layer_decay",
                format!("must lie in (0, 1], got {}", self.layer_decay),
            ));
        }
        if self.layers == Some(0) {
            return Err(("model.layers", "must be at least 1, got 0".to_owned()));
        }
        fraction("model.linear_weight", self.linear_weight, false)?;
        positive("model.distill_temperature", self.distill_temperature)?;
        fraction("model.distill_alpha", self.distill_alpha, false)?;
        check_early_exit(self.early_exit).map_err(|e| ("model.early_exit", e))?;
        check_early_exit(self.early_exit_hurried).map_err(|e| ("model.early_exit_hurried", e))?;
        positive("model.miss_cost", self.miss_cost)?;
        fraction("model.capacity_share", self.capacity_share, true)?;
        fraction("model.recall_floor", self.recall_floor, true)?;
        if let Some(n) = self.capacity_per_hour {
            positive("model.capacity_per_hour", n)?;
            match self.expected_posts_per_hour {
                Some(v) => positive("model.expected_posts_per_hour", v)?,
                None => {
                    return Err((
                        "model.capacity_per_hour",
                        "needs `model.expected_posts_per_hour` (the volume it is a share of)"
                            .into(),
                    ));
                }
            }
        }
        fraction("model.weight_decay", self.weight_decay, false)?;
        at_least_one("model.max_length", self.max_length, "")?;
        at_least_one("model.epochs", self.epochs, "")?;
        at_least_one("model.batch_size", self.batch_size, "")?;
        // Encoders of the BERT family have 512 positions.
        if self.max_length > MAX_MODEL_LENGTH {
            return Err((
                "model.max_length",
                format!(
                    "must be at most {MAX_MODEL_LENGTH} tokens (the encoder's positions), got {}",
                    self.max_length
                ),
            ));
        }
        Ok(())
    }
}

impl Business {
    fn validate(&self) -> Invalid {
        at_least_one("business.naive_repeats", self.naive_repeats, "")?;
        positive("business.reading_wpm", self.reading_wpm)?;
        positive("business.typing_wpm", self.typing_wpm)?;
        fraction("business.reply_fraction", self.reply_fraction, false)
    }
}

impl Monitor {
    fn validate(&self) -> Invalid {
        at_least_one("monitor.batch_size", self.batch_size, "")?;
        positive("monitor.drift_threshold", self.drift_threshold)?;
        fraction("monitor.drift_alpha", self.drift_alpha, true)
    }
}

impl Desk {
    fn validate(&self) -> Invalid {
        at_least_one("desk.page_size", self.page_size, "")?;
        for p in &self.trusted_proxies {
            let (ip, bits) = p.split_once('/').unwrap_or((p, ""));
            let max = match ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => 32,
                Ok(std::net::IpAddr::V6(_)) => 128,
                Err(_) => 0,
            };
            if max == 0 || !(bits.is_empty() || bits.parse::<u8>().is_ok_and(|b| b <= max)) {
                return Err((
                    "desk.trusted_proxies",
                    format!("{p:?} is not an IP address or CIDR (`10.0.0.0/8`, `::1`)"),
                ));
            }
        }
        for (key, v) in [
            ("desk.header_timeout_s", self.header_timeout_s),
            ("desk.request_timeout_s", self.request_timeout_s),
            ("desk.session_idle_s", self.session_idle_s),
            ("desk.max_streams", self.max_streams as u64),
            (
                "desk.max_streams_per_session",
                self.max_streams_per_session as u64,
            ),
            ("desk.sessions_per_user", self.sessions_per_user as u64),
            ("desk.group_quiet_s", self.group_quiet_s),
            ("desk.group_max_open", self.group_max_open as u64),
            (
                "desk.mastodon_max_characters",
                self.mastodon_max_characters as u64,
            ),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if self.max_connections <= self.max_streams {
            return Err((
                "desk.max_connections",
                format!(
                    "must exceed desk.max_streams ({}), or open pages leave no connection for anything else",
                    self.max_streams
                ),
            ));
        }
        if self.session_max_s < self.session_idle_s {
            return Err((
                "desk.session_max_s",
                format!("must be at least session_idle_s ({})", self.session_idle_s),
            ));
        }
        if !(self.group_similarity > 0.0 && self.group_similarity <= 1.0) {
            return Err((
                "desk.group_similarity",
                format!("must lie in (0, 1], got {}", self.group_similarity),
            ));
        }
        if !(self.uncertain_band > 0.0 && self.uncertain_band < 1.0) {
            return Err((
                "desk.uncertain_band",
                format!("must lie in (0, 1), got {}", self.uncertain_band),
            ));
        }
        match parse_duration(&self.first_response) {
            Ok(d) if d.as_secs() >= 1 => {}
            Ok(_) => return Err(("desk.first_response", "must be at least 1s".into())),
            Err(e) => return Err(("desk.first_response", e)),
        }
        if self.timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err((
                "desk.timezone",
                format!(
                    "{:?} is not a time zone: write an IANA name such as \"UTC\" or \"America/New_York\"",
                    self.timezone
                ),
            ));
        }
        self.alerts.validate()?;
        Ok(())
    }
}

impl Area {
    pub const ALL: [Area; 8] = [
        Area::Raw,
        Area::Combined,
        Area::Filtered,
        Area::Processed,
        Area::Splits,
        Area::Models,
        Area::Reports,
        Area::Quarantine,
    ];
}

/// Merges `over` into `base`: tables key by key, everything else replaced. Term maps
/// (`wanted`, `unwanted`) are replaced whole, so a profile never inherits JWST terms.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        let whole = k == "wanted" || k == "unwanted";
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) if !whole => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl Stream {
    /// The v2 rules for the track terms: terms OR-ed (a multi-word term's words AND-ed),
    /// plus the language and retweet operators, packed into rules of ≤ 512 characters.
    pub fn rules(&self) -> Vec<String> {
        let mut suffix = String::new();
        if let Some(lang) = self.lang.as_deref().filter(|l| !l.is_empty()) {
            suffix.push_str(&format!(" lang:{lang}"));
        }
        if self.exclude_retweets {
            suffix.push_str(" -is:retweet");
        }
        let clause = |t: &str| {
            let t = t.trim();
            if t.contains(' ') {
                format!("({t})")
            } else {
                t.to_owned()
            }
        };
        let finish = |terms: &[String]| format!("({}){suffix}", terms.join(" OR "));
        let mut rules = Vec::new();
        let mut current: Vec<String> = Vec::new();
        for t in &self.track {
            current.push(clause(t));
            if current.len() > 1 && finish(&current).len() > MAX_RULE_LEN {
                let last = current.pop().expect("just pushed");
                rules.push(finish(&current));
                current = vec![last];
            }
        }
        if !current.is_empty() {
            rules.push(finish(&current));
        }
        rules
    }
}

/// The longest `model.max_length` a config may ask for: the positions of BERT-family encoders.
pub const MAX_MODEL_LENGTH: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_config_writes_only_under_var_lib_flagship() {
        // Under the unit's ProtectSystem=strict, a relative location would resolve under /etc.
        let c =
            Config::load(&flagship_testkit::workspace_root().join("deploy/flagship.toml")).unwrap();
        for area in Area::ALL {
            match c.location(area).unwrap() {
                Location::Local(p) => assert!(p.starts_with("/var/lib/flagship"), "{p:?}"),
                other => panic!("{other}"),
            }
        }
    }

    #[test]
    fn settings_no_run_can_use_are_refused() {
        let long = "x".repeat(610);
        for (text, key) in [
            ("[mission.stream]\ntrack = []\n", "mission.stream.track"),
            (
                &format!("[mission.stream]\ntrack = [\"{long}\"]\n")[..],
                "mission.stream.track",
            ),
            ("[model]\nmax_length = 100000\n", "model.max_length"),
            ("[split]\ntest_size = 0\n", "split.test_size"),
            ("[split]\nval_size = 0\n", "split.val_size"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(&format!("key `{key}`")), "{text}: {e}");
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("flagship.toml"), Path::new("/srv/flagship"))
    }

    #[test]
    fn defaults_match_the_seed() {
        let c = parse("").unwrap();
        assert_eq!(c.mission.name, "jwst");
        assert_eq!(c.mission.stream.track.len(), 61 + 3);
        assert_eq!(c.mission.filter.wanted["words"].len(), 11);
        assert_eq!(c.mission.filter.wanted["phrases"].len(), 12);
        let unwanted: usize = c.mission.filter.unwanted.values().map(Vec::len).sum();
        assert_eq!(unwanted, 12 + 16 + 16 + 6 + 13 + 14);
        assert_eq!((c.split.test_size, c.split.val_size), (600, 600));
        assert_eq!(c.business.reading_wpm, 135.0);
        assert_eq!(c.business.typing_wpm, 40.0);
        assert_eq!(c.business.reply_fraction, 1.0);
        assert_eq!(c.model.expected_need_support_rate, 0.40);
        assert_eq!(
            c.location(Area::Raw).unwrap(),
            Location::Local("/srv/flagship/data/raw".into())
        );
    }

    #[test]
    fn user_file_merges_over_defaults() {
        let c = parse(
            "[model]\nepochs = 2\n[storage]\nraw = \"s3://bkt/datasets/twitter/kinesis-demo\"\n\
             [storage.s3]\nendpoint_url = \"http://127.0.0.1:5000\"\n\
             [mission.filter.unwanted]\nspam = [\"buy now\"]\n",
        )
        .unwrap();
        assert_eq!(c.model.epochs, 2);
        assert_eq!(c.model.batch_size, 32);
        assert_eq!(
            c.location(Area::Raw).unwrap(),
            Location::S3 {
                bucket: "bkt".into(),
                prefix: "datasets/twitter/kinesis-demo".into()
            }
        );
        assert_eq!(
            c.storage.s3.endpoint_url.as_deref(),
            Some("http://127.0.0.1:5000")
        );
        // Term maps are replaced whole, not merged with the JWST lists.
        assert_eq!(
            c.mission.filter.unwanted.keys().collect::<Vec<_>>(),
            ["spam"]
        );
        assert_eq!(c.mission.filter.wanted["words"].len(), 11);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = parse("[model]\nepochz = 3\n").unwrap_err().to_string();
        assert!(e.starts_with("flagship.toml: key `model.epochz`"), "{e}");
        assert!(e.contains("unknown field `epochz`"), "{e}");

        let e = parse("[wat]\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `wat`"), "{e}");

        let e = parse("[model]\nepochs = \"five\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `model.epochs`"), "{e}");

        let e = parse("[model]\nexpected_need_support_rate = 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.expected_need_support_rate") && e.contains("(0, 1)"),
            "{e}"
        );

        let e = parse("[storage]\nraw = \"gs://x/y\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gs://x/y") && e.contains("unsupported scheme"),
            "{e}"
        );

        let e = parse("[model\n").unwrap_err().to_string();
        assert!(e.starts_with("flagship.toml: "), "{e}");

        // No wanted group keeps every topic (the demo); an empty group is a mistake.
        let all = parse("[mission.filter.wanted]\n").unwrap();
        assert!(all.mission.filter.wanted.is_empty());
        let e = parse("[mission.filter.wanted]\nwords = []\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("group `words` has no terms"), "{e}");

        let p =
            parse("[pipeline]\nsplit_until = \"2022-07-14T23:59:59Z\"\nmax_steps = 9\n").unwrap();
        assert_eq!(p.pipeline.max_steps, Some(9));
        assert!(p.pipeline.replay.is_none());
        let e = parse("[pipeline]\nsplit_until = \"yesterday\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipeline.split_until"), "{e}");
    }

    #[test]
    fn stream_rules_fit_and_cover_every_term() {
        let c = parse("[mission.stream]\nexclude_retweets = true\n").unwrap();
        let rules = c.mission.stream.rules();
        assert!(rules.len() >= 2, "64 terms do not fit one rule");
        for r in &rules {
            assert!(r.len() <= MAX_RULE_LEN, "{} chars: {r}", r.len());
            assert!(r.ends_with(" lang:en -is:retweet"), "{r}");
        }
        let clauses: Vec<String> = rules
            .iter()
            .flat_map(|r| {
                let body = r.strip_suffix(" lang:en -is:retweet").unwrap();
                let body = body.strip_prefix('(').unwrap().strip_suffix(')').unwrap();
                body.split(" OR ").map(str::to_owned).collect::<Vec<_>>()
            })
            .collect();
        let expected: Vec<String> = c
            .mission
            .stream
            .track
            .iter()
            .map(|t| {
                if t.contains(' ') {
                    format!("({t})")
                } else {
                    t.clone()
                }
            })
            .collect();
        assert_eq!(clauses, expected, "every term once, in order");
    }

    #[test]
    fn a_mastodon_token_belongs_to_one_instance() {
        // One variable per instance, found by host however the instance is written.
        let c = parse(
            "[sources.mastodon]\ninstances = [\"https://Mastodon.social/\", \"fosstodon.org\", \"http://127.0.0.1:8080\"]\n\
             token_envs = { \"mastodon.social\" = \"MASTODON_TOKEN_SOCIAL\", \"127.0.0.1:8080\" = \"LOCAL\" }\n",
        )
        .unwrap();
        let m = &c.sources.mastodon;
        assert_eq!(
            m.token_env_of("https://Mastodon.social/"),
            Some("MASTODON_TOKEN_SOCIAL")
        );
        assert_eq!(m.token_env_of("fosstodon.org"), None);
        assert_eq!(m.token_env_of("http://127.0.0.1:8080"), Some("LOCAL"));
        assert_eq!(m.token_vars(), ["LOCAL", "MASTODON_TOKEN_SOCIAL"]);
        // The older single variable: fine with one instance.
        let one = parse(
            "[sources.mastodon]\ninstances = [\"mastodon.social\"]\ntoken_env = \"MASTODON_TOKEN\"\n",
        )
        .unwrap();
        assert_eq!(
            one.sources.mastodon.token_env_of("mastodon.social"),
            Some("MASTODON_TOKEN")
        );
        // The defaults name no token (two instances).
        assert_eq!(
            parse("").unwrap().sources.mastodon.token_vars(),
            Vec::<&str>::new()
        );
        for (text, key, says) in [
            (
                "[sources.mastodon]\ntoken_env = \"MASTODON_TOKEN\"\n",
                "sources.mastodon.token_env",
                "a token belongs to one instance",
            ),
            (
                "[sources.mastodon]\ntoken_envs = { \"example.org\" = \"T\" }\n",
                "sources.mastodon.token_envs",
                "not in `instances`",
            ),
            (
                "[sources.mastodon]\ntoken_envs = { \"fosstodon.org\" = \"LD_PRELOAD=x\" }\n",
                "sources.mastodon.token_envs",
                "not an environment variable name",
            ),
            (
                "[sources.mastodon]\ninstances = [\"http://mastodon.example\"]\n",
                "sources.mastodon.instances",
                "only to a loopback address",
            ),
            (
                "[sources.mastodon]\ninstances = [\"http://127.0.0.1@mastodon.example\"]\n",
                "sources.mastodon.instances",
                "only to a loopback address",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(
                e.contains(&format!("key `{key}`")) && e.contains(says),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn the_desk_limits_and_proxies_are_checked() {
        let c = parse("[desk]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"fd00::/8\"]")
            .unwrap();
        assert_eq!(c.desk.trusted_proxies.len(), 3);
        for (text, key) in [
            (
                "trusted_proxies = [\"10.0.0.0/33\"]",
                "desk.trusted_proxies",
            ),
            (
                "trusted_proxies = [\"proxy.local\"]",
                "desk.trusted_proxies",
            ),
            ("header_timeout_s = 0", "desk.header_timeout_s"),
            (
                "max_connections = 100\nmax_streams = 100",
                "desk.max_connections",
            ),
            (
                "session_idle_s = 7200\nsession_max_s = 3600",
                "desk.session_max_s",
            ),
        ] {
            let e = parse(&format!("[desk]\n{text}")).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn the_team_clock_and_alerts_are_checked() {
        let c = parse(
            "[desk]\nfirst_response = \"30m\"\ntimezone = \"America/New_York\"\n[desk.alerts]\nwebhook = \"http://127.0.0.1:9000/hook\"",
        )
        .unwrap();
        assert_eq!(c.desk.first_response().as_secs(), 1800);
        assert_eq!(c.desk.timezone().name(), "America/New_York");
        for (text, key, says) in [
            (
                "[desk]\nfirst_response = \"soon\"",
                "desk.first_response",
                "not a duration",
            ),
            (
                "[desk]\nfirst_response = \"0s\"",
                "desk.first_response",
                "at least 1s",
            ),
            (
                "[desk]\ntimezone = \"Mars/Olympus\"",
                "desk.timezone",
                "not a time zone",
            ),
            (
                "[desk.alerts]\nwebhook = \"http://hooks.example.org/T0/B0/xoxb-T0K3N\"",
                "desk.alerts.webhook",
                "http://hooks.example.org/…",
            ),
            (
                "[desk.alerts]\nwebhook_format = \"xml\"",
                "desk.alerts.webhook_format",
                "slack or json",
            ),
            (
                "[desk.alerts]\nburst_p_value = 0.7",
                "desk.alerts.burst_p_value",
                "(0, 0.5)",
            ),
            (
                "[desk.alerts]\nburst_baseline_s = 600",
                "desk.alerts.burst_baseline_s",
                "6 ×",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(says), "{text}: {e}");
            // A webhook's path (a Slack URL's credential) never reaches the error.
            assert!(!e.contains("T0K3N"), "{e}");
        }
        let a = Alerts {
            webhook: "https://hooks.slack.com/services/T0/B0/xoxb-T0K3N".into(),
            ..Alerts::default()
        };
        let shown = format!("{a:?}");
        assert!(
            shown.contains("https://hooks.slack.com/…") && !shown.contains("T0K3N"),
            "{shown}"
        );
    }
}
