//! The pieces several commands share — so that no command imports another: durations and
//! signals, the source flags of `ingest`, `watch` and `desk`, the model a live command loads,
//! and the monitoring profile a model is trained with and checked against.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use flagship_core::Platform;
use flagship_core::config::{Business, Config};
use flagship_ingest::jetstream::{Jetstream, JetstreamConfig};
use flagship_ingest::mastodon::{Instance, MastodonConfig, MastodonStream, Timeline};
use flagship_ingest::source::{Merged, PostSource, Replay};
use flagship_ingest::xstream::{self, XStream, XStreamConfig};
use flagship_metrics::Profile;
use flagship_metrics::monitor::{self, GroupColumns};
use flagship_store::table::Table;

/// A duration as people write it (`90s`, `10m`, `2h`): the config's own rule.
pub use flagship_core::config::parse_duration;

/// How a live command (`watch`, `desk`) batches posts for the model and explains the flagged.
#[derive(clap::Args)]
pub struct ScoringArgs {
    /// Classify at most this many posts at once…
    #[arg(long, default_value_t = flagship_core::live::MAX_BATCH)]
    pub max_batch: usize,
    /// …and wait this long after the first waiting post for more (`0ms`: score what has
    /// arrived as soon as the model is free; a burst still goes in together).
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    pub max_wait: Duration,
    /// Words kept to say why a flagged post was flagged (0: none).
    #[arg(long, default_value_t = 3)]
    pub explain: usize,
    /// A flagged post still waiting this long after its write gets its words from the
    /// pooled attribution (one pass a post) rather than occlusion (a pass per word); `0ms`:
    /// always, `1h`: never.
    #[arg(long, value_parser = parse_duration, default_value = flagship_core::live::EXPLAIN_BEHIND_FLAG)]
    pub explain_behind: Duration,
    /// A flagged post's words come with it, from the scoring pass itself (its words left
    /// out of the deciding layer's mean pool), and occlusion refines them while the loop is
    /// idle; `false`: words only after the write (a mean-pooled model's only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub scored_words: bool,
    /// A micro-batch of 16 posts or more whose oldest post has waited this long is scored in a
    /// hurry, and so is every batch for 5 s after: the exits' looser margins
    /// (`model.early_exit_hurried`), fewer layers a post, so a loop that has fallen behind (a
    /// launch burst) catches up; its posts are marked `hurried`. `0ms`: every batch; `1h`:
    /// never.
    #[arg(long, value_parser = parse_duration, default_value = flagship_core::live::HURRY_AFTER_FLAG)]
    pub hurry_after: Duration,
}

impl ScoringArgs {
    /// The live loop's options: these, and when the run stops by itself.
    #[cfg(feature = "model")]
    pub fn options(
        &self,
        max_posts: Option<u64>,
        duration: Option<Duration>,
    ) -> flagship_live::Options {
        flagship_live::Options {
            max_batch: self.max_batch,
            max_wait: self.max_wait,
            max_posts,
            duration,
            explain: self.explain,
            explain_behind: self.explain_behind,
            scored_words: self.scored_words,
            hurry_after: self.hurry_after,
        }
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("signal received: draining the queue and flushing");
}

/// Resolves when Ctrl-C / SIGTERM arrives or `limit` passes.
pub async fn stop_after(limit: Option<Duration>) {
    match limit {
        Some(d) => {
            tokio::select! {
                _ = signal() => {}
                _ = tokio::time::sleep(d) => {}
            }
        }
        None => signal().await,
    }
}

/// A running `/metrics` listener ([`serve_metrics`]); it stops when dropped, with the command.
pub struct MetricsListener {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Serves `GET /metrics` — `telemetry`'s figures in Prometheus' text format — on `addr`
/// (`--metrics` of `watch` and `ingest run`) until the returned listener is dropped.
/// Loopback addresses only: the listener has no login, so the scraper runs on the same host
/// (the desk's `/metrics` is the one behind a login).
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    telemetry: std::sync::Arc<flagship_core::telemetry::Telemetry>,
    who: &str,
) -> Result<MetricsListener> {
    use anyhow::Context;
    use axum::http::header::CONTENT_TYPE;
    if !addr.ip().is_loopback() {
        bail!(
            "--metrics {addr}: not a loopback address; the metrics listener has no login, so it \
             listens on loopback only (127.0.0.1:PORT or [::1]:PORT: scrape from this host)"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics: cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = telemetry.text();
            async move {
                (
                    [(CONTENT_TYPE, flagship_core::telemetry::CONTENT_TYPE)],
                    text,
                )
            }
        }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!("the metrics listener stopped: {e}");
        }
    });
    println!("{who}: metrics at http://{addr}/metrics");
    Ok(MetricsListener { _stop: stop })
}

/// Where posts come from: the X API v2 filtered stream, Bluesky, Mastodon, or a replay.
#[derive(clap::Args)]
pub struct SourceArgs {
    /// Where posts come from: x (paid API), bluesky (Jetstream), mastodon (instances'
    /// streaming API); repeat for several at once. Default: the sources the config enables.
    /// With --replay: what the recording holds (default x).
    #[arg(long = "source", value_parser = parse_platform)]
    pub sources: Vec<Platform>,
    /// Replay recorded lines (a file or a folder of .jsonl[.gz]) instead of a live source: X
    /// v2 stream messages, Jetstream events, or Mastodon statuses / stream events.
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// Replay paced by the posts' times, this many times faster (default: as fast as possible).
    #[arg(long)]
    pub speed: Option<f64>,
    /// X API base URL (default: the config's sources.x.base_url).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Do not change the stream's rules (use them as they are).
    #[arg(long)]
    pub no_rule_sync: bool,
}

fn parse_platform(s: &str) -> Result<Platform, String> {
    s.parse()
}

impl SourceArgs {
    /// A replay of `path` (X v2 messages) as fast as it reads.
    #[cfg(feature = "model")]
    pub fn replay(path: PathBuf) -> SourceArgs {
        SourceArgs {
            sources: vec![],
            replay: Some(path),
            speed: None,
            base_url: None,
            no_rule_sync: false,
        }
    }

    /// The platforms asked for, else those the config enables.
    fn platforms(&self, config: &Config) -> Result<Vec<Platform>> {
        if !self.sources.is_empty() {
            let mut v = self.sources.clone();
            v.sort();
            v.dedup();
            return Ok(v);
        }
        let s = &config.sources;
        let on: Vec<Platform> = [
            (Platform::X, s.x.enabled),
            (Platform::Bluesky, s.bluesky.enabled),
            (Platform::Mastodon, s.mastodon.enabled),
        ]
        .into_iter()
        .filter_map(|(p, on)| on.then_some(p))
        .collect();
        if on.is_empty() {
            bail!("no source: pass --source x|bluesky|mastodon or enable one under [sources]");
        }
        Ok(on)
    }

    /// Opens the replay, or the live sources (several are merged). `who` names the command:
    /// each keeps its own Bluesky resume point (`ingest`: `sources.bluesky.cursor`; others
    /// beside it, `<name>.<who>.json`), whose crash checkpoint stays `lag` behind.
    pub async fn open(
        &self,
        config: &Config,
        who: &str,
        lag: Duration,
    ) -> Result<Box<dyn PostSource>> {
        if let Some(p) = &self.replay {
            let platform = match self.sources[..] {
                [] => Platform::X,
                [p] => p,
                _ => bail!("--replay reads one platform's recording: pass one --source"),
            };
            return Ok(Box::new(
                Replay::new(Replay::files_of(p)?, self.speed).platform(platform),
            ));
        }
        let mut opened: Vec<Box<dyn PostSource>> = Vec::new();
        for p in self.platforms(config)? {
            opened.push(match p {
                Platform::X => self.open_x(config, who).await?,
                Platform::Bluesky => {
                    let b = &config.sources.bluesky;
                    let mut cfg = JetstreamConfig::new(b.endpoints.clone());
                    let cursor = config.path(&b.cursor);
                    let cursor = if who == "ingest" {
                        cursor
                    } else {
                        cursor.with_extension(format!("{who}.json"))
                    };
                    cfg.cursor_file = Some(cursor.clone());
                    cfg.rewind = Duration::from_secs(b.rewind_seconds);
                    cfg.lag = lag;
                    println!(
                        "{who}: Bluesky Jetstream ({} endpoints, resume point {}), posts matched against {} track terms",
                        b.endpoints.len(),
                        cursor.display(),
                        config.mission.stream.track.len()
                    );
                    Box::new(Jetstream::new(cfg)?)
                }
                Platform::Mastodon => {
                    let m = &config.sources.mastodon;
                    // Each instance's own token, from the variable the config names for it.
                    let mut from = Vec::new();
                    let instances: Vec<Instance> = m
                        .instances
                        .iter()
                        .map(|i| {
                            let var = m.token_env_of(i);
                            let token = var.and_then(|v| std::env::var(v).ok());
                            if let Some(v) = var.filter(|_| token.is_some()) {
                                from.push(format!("{} from {v}", Timeline::base_of(i)));
                            }
                            Instance::new(i, token)
                        })
                        .collect();
                    if !m.token_vars().contains(&"MASTODON_TOKEN")
                        && std::env::var_os("MASTODON_TOKEN").is_some()
                    {
                        tracing::warn!(
                            "MASTODON_TOKEN is set but not read: name each instance's token variable in sources.mastodon.token_envs"
                        );
                    }
                    let cfg = MastodonConfig::new(&instances, &m.hashtags, m.public);
                    println!(
                        "{who}: Mastodon, {} timelines on {} instances{}",
                        cfg.timelines.len(),
                        m.instances.len(),
                        if from.is_empty() {
                            String::new()
                        } else {
                            format!(" (tokens: {})", from.join(", "))
                        }
                    );
                    Box::new(MastodonStream::start(cfg)?)
                }
            });
        }
        Ok(if opened.len() == 1 {
            opened.pop().expect("one")
        } else {
            Box::new(Merged::new(opened))
        })
    }

    /// Connects to X after syncing the stream rules with the profile's.
    async fn open_x(&self, config: &Config, who: &str) -> Result<Box<dyn PostSource>> {
        let base = self
            .base_url
            .clone()
            .unwrap_or_else(|| config.sources.x.base_url.clone());
        let x = XStream::new(XStreamConfig::new(
            &base,
            xstream::token_from(&config.sources.x.token_env)?,
        ))?;
        if !self.no_rule_sync {
            let sync = x
                .sync_rules(&config.mission.name, &config.mission.stream.rules())
                .await?;
            println!(
                "{who}: stream rules of mission `{}`: {} kept, {} added, {} deleted; {} other rules on the app left alone",
                config.mission.name,
                sync.kept,
                sync.added.len(),
                sync.deleted.len(),
                sync.foreign
            );
        }
        Ok(Box::new(x))
    }
}

/// The model a live command scores with: `given`, else what the pipeline trains
/// (`<storage.models>/need-support`); loaded, with its folder. `hint` ends the error when it
/// cannot be loaded (the command's other ways out).
#[cfg(feature = "model")]
pub fn load_model(
    config: &Config,
    given: Option<&std::path::Path>,
    hint: &str,
) -> Result<(flagship_model::Classifier, PathBuf)> {
    use anyhow::Context;
    use flagship_core::location::Location;
    let model_dir = match given {
        Some(m) => m.to_owned(),
        None => match config.model_dir()? {
            Location::Local(p) => p,
            Location::S3 { .. } => bail!("storage.models is on S3: pass --model DIR"),
        },
    };
    let mut model = flagship_model::Classifier::load(&model_dir).with_context(|| {
        format!(
            "model {} (train one with `cargo xtask pipeline`, {hint})",
            model_dir.display()
        )
    })?;
    model.set_precision(config.model.precision);
    model.set_early_exit(config.model.early_exit > 0.0);
    Ok((model, model_dir))
}

/// The variable oneDNN sizes its primitive cache by.
#[cfg(feature = "model")]
const PRIMITIVE_CACHE_VAR: &str = "ONEDNN_PRIMITIVE_CACHE_CAPACITY";

/// Entries in a live command's oneDNN primitive cache. Its default, 1,024, keeps the kernels and
/// buffers of every shape a pass has had (rows padded to 128 times each post length): `watch`
/// grew from 0.69 to 1.00–1.15 GiB in 24,000 posts with it, to 0.86 GiB with 64, at about the
/// same speed (docs/model.md, "watch's memory").
#[cfg(feature = "model")]
const SERVING_PRIMITIVE_CACHE: &str = "64";

/// What a live command sets oneDNN's cache to, given the environment's value: nothing where
/// the environment has one.
#[cfg(feature = "model")]
fn serving_primitive_cache(set: Option<std::ffi::OsString>) -> Option<&'static str> {
    set.is_none().then_some(SERVING_PRIMITIVE_CACHE)
}

/// The environment a live command's libtorch starts in: oneDNN's primitive cache at
/// [`SERVING_PRIMITIVE_CACHE`] entries, unless the environment sets it already.
///
/// # Safety
///
/// Sets an environment variable: call it before the process starts a second thread.
#[cfg(feature = "model")]
pub unsafe fn serving_environment() {
    if let Some(entries) = serving_primitive_cache(std::env::var_os(PRIMITIVE_CACHE_VAR)) {
        // SAFETY: the caller's promise: no other thread reads the environment meanwhile.
        unsafe { std::env::set_var(PRIMITIVE_CACHE_VAR, entries) };
    }
}

/// The frozen sentence encoder the desk groups questions with: `model.base` (else the base
/// `cargo xtask setup` installed). `None`, said in the log, when `desk.groups` is off or no
/// base can be loaded: every post is then its own card.
#[cfg(feature = "model")]
pub fn load_embedder(config: &Config) -> Option<std::sync::Arc<dyn flagship_core::live::Embed>> {
    if !config.desk.groups {
        return None;
    }
    let base = match &config.model.base {
        Some(b) => Ok(config.path(b)),
        None => flagship_model::Checkpoint::default_base(),
    };
    let loaded = base
        .map_err(flagship_model::ModelError::from)
        .and_then(|b| flagship_model::SentenceEncoder::load(&b));
    match loaded {
        Ok(e) => {
            tracing::info!("question groups: sentence embeddings from {}", e.id);
            Some(std::sync::Arc::new(e))
        }
        Err(e) => {
            tracing::warn!(
                "question groups are off (every post is its own card): the base encoder did not load: {e}"
            );
            None
        }
    }
}

/// What the today panel says of a model: its base, when it was trained, its operating
/// point and threshold — never its folder's path.
#[cfg(feature = "model")]
pub fn describe_model(model: &flagship_model::Classifier) -> String {
    let c = &model.card;
    let base = c
        .base_model
        .as_ref()
        .and_then(|b| {
            std::path::Path::new(&b.path)
                .components()
                .rev()
                .map(|p| p.as_os_str().to_string_lossy().into_owned())
                .find(|p| p != "model" && p != "base-model" && !p.is_empty())
        })
        .unwrap_or_else(|| "a transformer".into());
    let trained = std::fs::metadata(model.dir.join("flagship.json"))
        .and_then(|m| m.modified())
        .ok()
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string()
        })
        .unwrap_or_else(|| "at an unknown time".into());
    let point = c
        .operating
        .as_ref()
        .map(|p| format!("{:?}", p.settings.rule).to_lowercase())
        .unwrap_or_else(|| "f2".into());
    let what = match c.kind {
        flagship_model::ModelKind::Linear => "TF-IDF + logistic regression".to_owned(),
        flagship_model::ModelKind::Transformer => format!("{base} fine-tuned"),
    };
    format!(
        "{what}, trained {trained}; operating point {point} (threshold {:.3})",
        c.threshold
    )
}

/// The reference profile saved beside a model, which `monitor` compares batches with.
pub const REFERENCE: &str = "monitor-reference.json";

/// Word counts: `num_words` if present, else counted from `text`.
pub fn words(t: &Table) -> Result<Vec<u32>> {
    Ok(if t.has_column("num_words") {
        t.f64_column("num_words")?
            .iter()
            .map(|&w| w as u32)
            .collect()
    } else {
        t.texts()?
            .iter()
            .map(|s| s.split_whitespace().count() as u32)
            .collect()
    })
}

/// `need_support` of each row from its `label` (`None` where unlabelled or not 0/1/2), when
/// the table has labels.
pub fn need_support(t: &Table) -> Result<Option<Vec<Option<bool>>>> {
    if !t.has_column("label") {
        return Ok(None);
    }
    let targets = t.targets()?;
    let bad = targets.iter().filter(|l| l.is_none()).count();
    if bad > 0 {
        eprintln!(
            "{}: {bad} row(s) without a 0/1/2 label left out of the quality check",
            t.path.display()
        );
    }
    Ok(Some(targets))
}

/// The profile of a predictions table: its grouping columns read here, the grouping and
/// statistics in `flagship_metrics::monitor`.
pub fn profile(t: &Table, probs: &[f64], flags: &[bool], business: &Business) -> Result<Profile> {
    let column = |names: &[&str]| -> Result<Option<Vec<Option<String>>>> {
        match names.iter().find(|n| t.has_column(n)) {
            Some(n) => Ok(Some(t.string_column(n)?)),
            None => Ok(None),
        }
    };
    let cols = GroupColumns {
        client: column(&["source", "client"])?,
        time_of_day: column(&["time_of_day"])?,
        created_at: column(&["created_at"])?,
        word_bin: column(&["word_bin"])?,
    };
    let labels = need_support(t)?;
    Ok(monitor::profile_of(
        probs,
        flags,
        &words(t)?,
        labels.as_deref(),
        &cols,
        business,
    ))
}

/// Writes `dir/monitor-reference.json` (atomically).
#[cfg(feature = "model")]
pub fn save_reference(dir: &std::path::Path, p: &Profile) -> Result<()> {
    flagship_store::fs::write_atomic(
        &dir.join(REFERENCE),
        (serde_json::to_string_pretty(p)? + "\n").as_bytes(),
    )?;
    Ok(())
}

#[cfg(all(test, feature = "model"))]
mod tests {
    #[test]
    fn a_live_command_sizes_onednns_cache_unless_the_environment_does() {
        assert_eq!(super::serving_primitive_cache(None), Some("64"));
        assert_eq!(super::serving_primitive_cache(Some("1024".into())), None);
    }
}
